"""The messaging app: chats, messages, receipts and the real-time server."""

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from messaging.realtime import state_metrics

        state_metrics.register()
