"""JSON API of the runs app (mounted by tunix_registry.api)."""

from ninja import Router

router = Router(tags=["runs"])
