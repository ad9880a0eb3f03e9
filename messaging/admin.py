"""Moderation in the Django admin: every action goes through a service, so it reaches live sockets."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_permission_codename
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from messaging import services
from messaging.errors import MessagingError
from messaging.models import (
    Chat,
    Exclusion,
    Membership,
    Message,
    MessageEdit,
    Reaction,
    ReadReceipt,
)

MUTE_DURATIONS = [
    ("", "until unmuted"),
    ("3600", "for 1 hour"),
    ("86400", "for 1 day"),
    ("604800", "for 1 week"),
]


class ModerationActionForm(helpers.ActionForm):
    """The changelist's action bar, with what a moderator may add to an action."""

    reason = forms.CharField(
        required=False, max_length=500, help_text="Optional; kept in the history."
    )
    duration = forms.ChoiceField(
        required=False, choices=MUTE_DURATIONS, help_text="For mute: how long."
    )


def moderation_reason(request) -> str:
    return (request.POST.get("reason") or "").strip()[:500]


def with_reason(text: str, reason: str) -> str:
    """A history entry: what was done, and why when the moderator said."""
    return f"{text} Reason: {reason}" if reason else text


class ModerationAdmin(admin.ModelAdmin):
    """Rows shown read-only: they change only through actions that call a service.

    A raw add, edit or delete would skip the notification live sockets depend on.
    Actions declared with `permissions=["moderate"]` need the model's
    `moderate_<model>` permission.
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_moderate_permission(self, request):
        codename = get_permission_codename("moderate", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    action_form = ModerationActionForm


def count_in_chat(model):
    """The chat's rows of `model`, counted in a subquery: joining two relations multiplies rows."""
    rows = model.objects.filter(chat=OuterRef("pk")).order_by().values("chat")
    return Coalesce(Subquery(rows.annotate(total=Count("pk")).values("total")), 0)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "muted", "joined_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    # Membership changes must notify sockets: they go through the actions of
    # MembershipAdmin, never through this inline's raw save.
    def has_add_permission(self, request, obj=None):
        return False

    # Each row shows its user: one query for all of them, not one per row.
    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "is_direct", "member_count", "message_count", "created_at"]
    list_filter = ["is_direct", "created_at"]
    search_fields = ["title"]
    readonly_fields = [
        "is_direct",
        "created_by",
        "created_at",
        "last_seq",
        "last_rev",
        "last_message_at",
    ]
    fields = ["title", *readonly_fields]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(members=count_in_chat(Membership), message_total=count_in_chat(Message))
        )

    @admin.display(description="members", ordering="members")
    def member_count(self, chat):
        return chat.members

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, chat):
        return chat.message_total

    # Chats are created by their members; the admin moderates them.
    def has_add_permission(self, request):
        return False


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("yes", "Deleted"), ("no", "Not deleted")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        return queryset


@admin.register(Message)
class MessageAdmin(ModerationAdmin):
    list_display = ["id", "chat", "seq", "sender", "short_text", "created_at", "is_deleted"]
    list_filter = [
        DeletedFilter,
        "created_at",
        ("chat", admin.RelatedOnlyFieldListFilter),
        ("sender", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["chat", "sender"]
    search_fields = ["text"]
    date_hierarchy = "created_at"
    list_per_page = 100
    readonly_fields = [
        "chat",
        "seq",
        "rev",
        "sender",
        "text",
        "client_message_id",
        "reply_to",
        "created_at",
        "edited_at",
        "edit_history",
        "reactions",
        "deleted_at",
        "deleted_by",
        "deleted_by_author",
    ]
    actions = ["delete_messages", "restore_messages"]

    @admin.display(description="text")
    def short_text(self, message):
        return message.text if len(message.text) <= 80 else message.text[:77] + "…"

    @admin.display(description="edit history")
    def edit_history(self, message):
        """Every earlier text with the time it was set, oldest first (kept after a deletion)."""
        earlier = MessageEdit.objects.filter(chat_id=message.chat_id, message=message).order_by(
            "id"
        )
        if not earlier:
            return "Never edited."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            ((edit.edited_at, edit.text) for edit in earlier),
        )
        return format_html(
            '<table class="edit-history"><tr><th>set at</th><th>text</th></tr>{}</table>', rows
        )

    @admin.display(description="reactions")
    def reactions(self, message):
        """Each emoji with who reacted, in order of first use (a deletion removes them)."""
        by_emoji: dict[str, list[str]] = {}
        for reaction in Reaction.objects.filter(
            chat_id=message.chat_id, message=message
        ).select_related("user"):
            by_emoji.setdefault(reaction.emoji, []).append(reaction.user.username)
        if not by_emoji:
            return "None."
        return format_html_join(
            "",
            '<p class="reaction">{} {}</p>',
            ((emoji, ", ".join(names)) for emoji, names in by_emoji.items()),
        )

    @admin.display(description="deleted", boolean=True, ordering="deleted_at")
    def is_deleted(self, message):
        return message.is_deleted

    @admin.action(
        description="Delete selected messages (members see them removed)",
        permissions=["moderate"],
    )
    def delete_messages(self, request, queryset):
        count = 0
        for message in queryset:
            if services.delete_message(message=message, moderator=request.user):
                self.log_change(
                    request,
                    message,
                    with_reason("Deleted by a moderator.", moderation_reason(request)),
                )
                count += 1
        self.message_user(request, f"{count} message(s) deleted.", messages.SUCCESS)

    @admin.action(
        description="Restore selected messages deleted by a moderator", permissions=["moderate"]
    )
    def restore_messages(self, request, queryset):
        count, final = 0, 0
        for message in queryset:
            try:
                restored = services.restore_message(message=message, moderator=request.user)
            except MessagingError:
                final += 1  # its author deleted it: that is final
                continue
            if restored:
                self.log_change(
                    request,
                    message,
                    with_reason("Restored by a moderator.", moderation_reason(request)),
                )
                count += 1
        self.message_user(request, f"{count} message(s) restored.", messages.SUCCESS)
        if final:
            self.message_user(
                request,
                f"{final} message(s) were deleted by their authors and cannot be restored.",
                messages.WARNING,
            )


@admin.register(Membership)
class MembershipAdmin(ModerationAdmin):
    list_display = ["id", "chat", "user", "role", "muted", "muted_until", "joined_at"]
    list_filter = ["role", "muted"]
    list_select_related = ["chat", "user"]
    search_fields = ["user__username", "chat__title"]
    readonly_fields = ["chat", "user", "role", "muted", "muted_until", "joined_at"]
    actions = ["mute_members", "unmute_members", "remove_members"]

    @admin.action(description="Mute selected members", permissions=["moderate"])
    def mute_members(self, request, queryset):
        self.set_muted(request, queryset, muted=True)

    @admin.action(description="Unmute selected members", permissions=["moderate"])
    def unmute_members(self, request, queryset):
        self.set_muted(request, queryset, muted=False)

    def set_muted(self, request, queryset, *, muted: bool):
        seconds = request.POST.get("duration") or ""
        until = timezone.now() + timedelta(seconds=int(seconds)) if seconds.isdigit() else None
        what = (
            ("Muted" + (f" until {until:%Y-%m-%d %H:%M} UTC." if until else "."))
            if muted
            else "Unmuted."
        )
        count = 0
        for membership in queryset.select_related("chat", "user"):
            if services.set_muted(
                chat_id=membership.chat_id, user_id=membership.user_id, muted=muted, until=until
            ):
                self.log_change(request, membership, with_reason(what, moderation_reason(request)))
                count += 1
        word = "muted" if muted else "unmuted"
        self.message_user(request, f"{count} member(s) {word}.", messages.SUCCESS)

    @admin.action(description="Remove selected members from their chats", permissions=["moderate"])
    def remove_members(self, request, queryset):
        count = 0
        for membership in queryset.select_related("chat", "user"):
            reason = moderation_reason(request)
            services.remove_member(
                actor=request.user,
                chat_id=membership.chat_id,
                user_id=membership.user_id,
                by_moderator=True,
                reason=reason,
            )
            # Logged on the chat: the membership row is gone.
            self.log_change(
                request, membership.chat, with_reason(f"Removed member {membership.user}.", reason)
            )
            count += 1
        self.message_user(request, f"{count} member(s) removed.", messages.SUCCESS)


@admin.register(ReadReceipt)
class ReadReceiptAdmin(ModerationAdmin):
    list_display = ["id", "chat", "user", "seq", "read_at", "delivered_seq"]
    list_select_related = ["chat", "user"]
    search_fields = ["user__username"]


@admin.register(Exclusion)
class ExclusionAdmin(ModerationAdmin):
    """Members a moderator removed: they cannot re-enter the chat until let back here."""

    list_display = ["id", "chat", "user", "moderator", "reason", "created_at"]
    list_select_related = ["chat", "user", "moderator"]
    search_fields = ["user__username", "chat__title", "reason"]
    readonly_fields = ["chat", "user", "moderator", "reason", "created_at"]
    actions = ["let_back"]

    # Letting back is moderating memberships: the same permission as removing.
    def has_moderate_permission(self, request):
        return request.user.has_perm("messaging.moderate_membership")

    @admin.action(
        description="Let the selected members back into their chats", permissions=["moderate"]
    )
    def let_back(self, request, queryset):
        count = 0
        for exclusion in queryset.select_related("chat", "user"):
            if services.readmit_member(chat_id=exclusion.chat_id, user_id=exclusion.user_id):
                self.log_change(
                    request,
                    exclusion.chat,
                    with_reason(f"Let member {exclusion.user} back.", moderation_reason(request)),
                )
                count += 1
        self.message_user(request, f"{count} member(s) let back.", messages.SUCCESS)
