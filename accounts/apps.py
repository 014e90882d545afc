from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts.roles import ensure_roles_after_migrate

        # After every migrate (the test database's too), once all apps'
        # permissions exist: the three role groups and what each may do.
        post_migrate.connect(ensure_roles_after_migrate, dispatch_uid="accounts.ensure_roles")
        self._forget_tokens_on_changes()

    def _forget_tokens_on_changes(self) -> None:
        """Empty this process's token cache when a token, user, group or grant changes.

        Whatever changes who a token belongs to or what they may do (a token
        revoked or deleted, a user deactivated or deleted, a role or permission
        granted or withdrawn) is then seen from the next request on.
        """
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from accounts.models import ApiToken
        from accounts.services import tokens_forget

        user_model = get_user_model()
        for model in (user_model, Group, ApiToken):
            for event, signal in (("save", post_save), ("delete", post_delete)):
                uid = f"accounts.forget_tokens.{event}.{model.__name__}"
                signal.connect(tokens_forget, sender=model, dispatch_uid=uid)
        for through in (
            user_model.groups.through,
            user_model.user_permissions.through,
            Group.permissions.through,
        ):
            uid = f"accounts.forget_tokens.{through.__name__}"
            m2m_changed.connect(tokens_forget, sender=through, dispatch_uid=uid)
