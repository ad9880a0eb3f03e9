"""`manage.py benchdata`: users in chats of K, with access tokens, for load tests."""

import json
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from messaging.models import Chat, Membership, PushSubscription, ReadReceipt

BATCH = 2000


class Command(BaseCommand):
    help = "Create N users in chats of K (user i in chat i // K) and write their tokens as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--chat-size", type=int, required=True)
        parser.add_argument("--output", required=True, help="file to write, '-' for stdout")
        parser.add_argument("--token-hours", type=float, default=6.0)
        parser.add_argument("--password", default="bench-password")
        parser.add_argument(
            "--notify-members",
            type=int,
            default=0,
            help="also a chat of one announcer and this many members, each with a push subscription",
        )
        parser.add_argument(
            "--push-endpoint", default="", help="their subscriptions' endpoints: this URL + /<i>"
        )

    def handle(
        self,
        *args,
        users,
        chat_size,
        output,
        token_hours,
        password,
        notify_members,
        push_endpoint,
        **options,
    ):
        if users < 1 or chat_size < 1:
            self.stderr.write("--users and --chat-size must be positive")
            raise SystemExit(2)
        run = secrets.token_hex(4)
        # One hash for everybody: hashing per user would take minutes.
        password_hash = make_password(password)
        User = get_user_model()  # noqa: N806
        with transaction.atomic():
            User.objects.bulk_create(
                [User(username=f"bench-{run}-{i}", password=password_hash) for i in range(users)],
                batch_size=BATCH,
            )
            people = list(User.objects.filter(username__startswith=f"bench-{run}-"))
            people.sort(key=lambda user: int(user.username.rsplit("-", 1)[1]))
            chat_count = (users + chat_size - 1) // chat_size
            Chat.objects.bulk_create(
                [Chat(title=f"bench {run} #{n}") for n in range(chat_count)], batch_size=BATCH
            )
            chats = list(Chat.objects.filter(title__startswith=f"bench {run} #"))
            chats.sort(key=lambda chat: int(chat.title.rsplit("#", 1)[1]))
            Membership.objects.bulk_create(
                [
                    Membership(
                        chat=chats[i // chat_size],
                        user=person,
                        role=Membership.Role.OWNER
                        if i % chat_size == 0
                        else Membership.Role.MEMBER,
                    )
                    for i, person in enumerate(people)
                ],
                batch_size=BATCH,
            )
            ReadReceipt.objects.bulk_create(
                [ReadReceipt(chat=chats[i // chat_size], user=p) for i, p in enumerate(people)],
                batch_size=BATCH,
            )
        lifetime = timedelta(hours=token_hours)
        entries = []
        for i, person in enumerate(people):
            token = AccessToken.for_user(person)
            token.set_exp(lifetime=lifetime)
            entries.append(
                {
                    "userId": str(person.pk),
                    "token": str(token),
                    "chatId": str(chats[i // chat_size].pk),
                }
            )
        document = {"users": entries}
        if notify_members:
            document["notify"] = self.notify_chat(run, notify_members, push_endpoint, lifetime)
        text = json.dumps(document)
        if output == "-":
            self.stdout.write(text)
        else:
            with open(output, "w") as handle:
                handle.write(text)
            self.stderr.write(f"{users} users in {len(chats)} chats written to {output}")

    def notify_chat(self, run: str, members: int, endpoint: str, lifetime) -> dict:
        """A chat of an announcer and `members` users who are never online, each subscribed to
        Web Push at `endpoint`/<i>, all with one key pair and auth secret, both written out so
        that the bench can decrypt what was pushed and count the messages it announces."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from messaging.webpush import b64url

        User = get_user_model()  # noqa: N806
        key = ec.generate_private_key(ec.SECP256R1())
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        auth = secrets.token_bytes(16)
        now = timezone.now()
        with transaction.atomic():
            User.objects.bulk_create(
                [User(username=f"notify-{run}-{i}", password="!") for i in range(members + 1)],
                batch_size=BATCH,
            )
            people = list(User.objects.filter(username__startswith=f"notify-{run}-"))
            people.sort(key=lambda user: int(user.username.rsplit("-", 1)[1]))
            chat = Chat.objects.create(title=f"notify {run}")
            Membership.objects.bulk_create(
                [Membership(chat=chat, user=person) for person in people], batch_size=BATCH
            )
            ReadReceipt.objects.bulk_create(
                [ReadReceipt(chat=chat, user=person) for person in people], batch_size=BATCH
            )
            PushSubscription.objects.bulk_create(
                [
                    PushSubscription(
                        user=person,
                        endpoint=f"{endpoint}/{i}",
                        p256dh=b64url(point),
                        auth=b64url(auth),
                        created_at=now,
                    )
                    for i, person in enumerate(people[1:])
                ],
                batch_size=BATCH,
            )
        token = AccessToken.for_user(people[0])
        token.set_exp(lifetime=lifetime)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "chatId": str(chat.pk),
            "userId": str(people[0].pk),
            "token": str(token),
            "pushPrivateKey": pem.decode(),
            "pushAuth": b64url(auth),
        }
