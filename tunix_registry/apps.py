from django.apps import AppConfig


class TunixRegistryConfig(AppConfig):
    """The project package as an app: its management commands and system checks."""

    name = "tunix_registry"
    verbose_name = "Tunix Registry"

    def ready(self) -> None:
        from tunix_registry import checks  # noqa: F401  (registers the system checks)
