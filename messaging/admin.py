"""Moderation in the Django admin: every action goes through a service, so it reaches live sockets."""

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils.html import format_html, format_html_join

from messaging import services
from messaging.errors import MessagingError
from messaging.models import Chat, Membership, Message, MessageEdit, Reaction, ReadReceipt


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
        earlier = MessageEdit.objects.filter(message=message).order_by("id")
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
        for reaction in Reaction.objects.filter(message=message).select_related("user"):
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
                self.log_change(request, message, "Deleted by a moderator.")
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
                self.log_change(request, message, "Restored by a moderator.")
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
    list_display = ["id", "chat", "user", "role", "muted", "joined_at"]
    list_filter = ["role", "muted"]
    list_select_related = ["chat", "user"]
    search_fields = ["user__username", "chat__title"]
    readonly_fields = ["chat", "user", "role", "muted", "joined_at"]
    actions = ["mute_members", "unmute_members", "remove_members"]

    @admin.action(description="Mute selected members", permissions=["moderate"])
    def mute_members(self, request, queryset):
        self.set_muted(request, queryset, muted=True)

    @admin.action(description="Unmute selected members", permissions=["moderate"])
    def unmute_members(self, request, queryset):
        self.set_muted(request, queryset, muted=False)

    def set_muted(self, request, queryset, *, muted: bool):
        count = 0
        for membership in queryset.select_related("chat", "user"):
            if services.set_muted(
                chat_id=membership.chat_id, user_id=membership.user_id, muted=muted
            ):
                self.log_change(request, membership, "Muted." if muted else "Unmuted.")
                count += 1
        word = "muted" if muted else "unmuted"
        self.message_user(request, f"{count} member(s) {word}.", messages.SUCCESS)

    @admin.action(description="Remove selected members from their chats", permissions=["moderate"])
    def remove_members(self, request, queryset):
        count = 0
        for membership in queryset.select_related("chat", "user"):
            services.remove_member(
                actor=request.user,
                chat_id=membership.chat_id,
                user_id=membership.user_id,
                by_moderator=True,
            )
            # Logged on the chat: the membership row is gone.
            self.log_change(request, membership.chat, f"Removed member {membership.user}.")
            count += 1
        self.message_user(request, f"{count} member(s) removed.", messages.SUCCESS)


@admin.register(ReadReceipt)
class ReadReceiptAdmin(ModerationAdmin):
    list_display = ["id", "chat", "user", "seq", "read_at", "delivered_seq"]
    list_select_related = ["chat", "user"]
    search_fields = ["user__username"]
