"""Typing indicators of one connection: forwarded to the chat's other members, coalesced, ended.

The protocol's rules (docs/protocol.md, `typing`): repeats within
TYPING_COALESCE_MS are not forwarded but restart the timer; `isTyping: false`
goes out TYPING_TIMEOUT_MS after the last `typing`, when the typist sends a
message in the chat, or when the connection closes, whichever comes first.
"""

import asyncio
import time

from django.conf import settings

from messaging import events, protocol


class _State:
    __slots__ = ("forwarded_at", "timer")

    def __init__(self):
        self.forwarded_at = float("-inf")
        self.timer: asyncio.TimerHandle | None = None


class TypingIndicators:
    """The chats one connection's user is typing in."""

    def __init__(self, user_id: str):
        self.user_id = user_id
        self.chats: dict[str, _State] = {}

    def __contains__(self, chat_id: str) -> bool:
        return chat_id in self.chats

    def typing(self, chat_id: str) -> None:
        """The user typed in the chat (a `typing` frame with `isTyping: true`)."""
        now = time.monotonic()
        state = self.chats.get(chat_id)
        if state is None:
            state = self.chats[chat_id] = _State()
        if now - state.forwarded_at >= settings.TYPING_COALESCE_MS / 1000:
            state.forwarded_at = now
            self._publish(chat_id, True)
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(
            settings.TYPING_TIMEOUT_MS / 1000, self.stop, chat_id
        )

    def stop(self, chat_id: str, *, force: bool = False) -> None:
        """End typing in the chat and tell the others; `force` tells them even if it had ended."""
        state = self.chats.pop(chat_id, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()
        if state is not None or force:
            self._publish(chat_id, False)

    def stop_all(self) -> None:
        for chat_id in list(self.chats):
            self.stop(chat_id)

    def _publish(self, chat_id: str, is_typing: bool) -> None:
        frame = protocol.typing_frame(chat_id=chat_id, user_id=self.user_id, is_typing=is_typing)
        events.publish(
            events.chat_group(chat_id),
            events.chat_frame_event(chat_id, frame, skip_user=self.user_id),
        )
