"""Users in the admin, as Django's UserAdmin shows them, plus banning that closes live sockets."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User
from messaging import services
from messaging.admin import ModerationActionForm, moderation_reason, with_reason
from messaging.errors import Forbidden


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    actions = ["ban_users", "unban_users"]
    action_form = ModerationActionForm

    def has_ban_permission(self, request):
        return request.user.has_perm("accounts.ban_user")

    def has_unban_permission(self, request):
        return request.user.has_perm("accounts.unban_user")

    @admin.action(
        description="Ban selected users (deactivate; their sockets close)", permissions=["ban"]
    )
    def ban_users(self, request, queryset):
        count = 0
        for user in queryset.filter(is_active=True):
            try:
                services.ban_user(user=user, moderator=request.user)
            except Forbidden as refusal:
                self.message_user(request, f"{user} was not banned: {refusal}", messages.WARNING)
                continue
            self.log_change(
                request, user, with_reason("Banned (deactivated).", moderation_reason(request))
            )
            count += 1
        self.message_user(request, f"{count} user(s) banned.", messages.SUCCESS)

    @admin.action(description="Unban selected users (activate again)", permissions=["unban"])
    def unban_users(self, request, queryset):
        count = 0
        for user in queryset.filter(is_active=False):
            if services.unban_user(user=user):
                self.log_change(
                    request,
                    user,
                    with_reason("Unbanned (active again).", moderation_reason(request)),
                )
                count += 1
        self.message_user(request, f"{count} user(s) unbanned.", messages.SUCCESS)

    # Unticking "active" on the form is a ban too: the user's sockets must close.
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            services.ban_user(user=obj)
