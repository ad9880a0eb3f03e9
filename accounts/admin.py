"""Users in the admin, as Django's UserAdmin shows them, plus banning that closes live sockets."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User
from messaging import services


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    actions = ["ban_users"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("accounts.ban_user"):
            actions.pop("ban_users", None)
        return actions

    @admin.action(description="Ban selected users (deactivate; their sockets close)")
    def ban_users(self, request, queryset):
        count = 0
        for user in queryset.filter(is_active=True):
            if user.pk == request.user.pk:
                continue
            services.ban_user(user=user)
            self.log_change(request, user, "Banned (deactivated).")
            count += 1
        self.message_user(request, f"{count} user(s) banned.", messages.SUCCESS)
