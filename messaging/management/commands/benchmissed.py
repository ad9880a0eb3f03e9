"""`manage.py benchmissed`: messages stored in the bench chats while their members are away."""

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from messaging import services
from messaging.models import Chat

BATCH = 500


class Command(BaseCommand):
    help = (
        "Store N messages in each chat of a `benchdata` file, from its members in turn, and "
        "write each chat's last seq and rev from before them (what its members hold) as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, help="a file `benchdata` wrote")
        parser.add_argument("--per-chat", type=int, required=True)
        parser.add_argument("--output", required=True)

    def handle(self, *args, data, per_chat, output, **options):
        entries = json.loads(Path(data).read_text())["users"]
        members: dict[int, list[int]] = {}
        for entry in entries:
            members.setdefault(int(entry["chatId"]), []).append(int(entry["userId"]))
        users = get_user_model().objects.in_bulk([u for ids in members.values() for u in ids])
        held = {
            str(chat_id): {"seq": str(seq), "rev": str(rev)}
            for chat_id, seq, rev in Chat.objects.filter(pk__in=members).values_list(
                "pk", "last_seq", "last_rev"
            )
        }
        batch = []
        for chat_id, ids in members.items():
            for n in range(per_chat):
                sender = users[ids[n % len(ids)]]
                batch.append(services.Outgoing(sender, chat_id, f"missed #{n}", None, None))
        for start in range(0, len(batch), BATCH):
            with services.publish_order:
                results = services.store_messages(batch[start : start + BATCH])
            refused = [r for r in results if not isinstance(r, tuple)]
            if refused:
                raise RuntimeError(f"{len(refused)} messages refused: {refused[0]!r}")
        Path(output).write_text(json.dumps({"perChat": per_chat, "held": held}))
        self.stdout.write(f"{len(batch)} messages stored in {len(members)} chats")
