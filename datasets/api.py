"""JSON API of the datasets app (mounted by tunix_registry.api)."""

from ninja import Router

router = Router(tags=["datasets"])
