"""JSON API of the traces app (mounted by tunix_registry.api)."""

from ninja import Router

router = Router(tags=["traces"])
