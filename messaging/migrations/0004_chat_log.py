"""The chat log: each chat's rev and each message's, edits, reactions, replies, delivered positions.

Every message stored so far took one change when it was created, so its rev is
its seq and its chat's last rev is its last seq: the log starts gap-free.
(Deletions made before it are in no log: a client holding such a message
learns of its deletion from history, as before.)
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def number_the_log(apps, schema_editor):
    apps.get_model("messaging", "Message").objects.update(rev=F("seq"))
    apps.get_model("messaging", "Chat").objects.update(last_rev=F("last_seq"))
    # What a member has read was delivered to them.
    apps.get_model("messaging", "ReadReceipt").objects.update(delivered_seq=F("seq"))


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0003_moderators_group"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="chat",
            name="last_rev",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="message",
            name="rev",
            field=models.BigIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="message",
            name="deleted_by_author",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="message",
            name="edited_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="reply_to",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="messaging.message",
            ),
        ),
        migrations.AddField(
            model_name="readreceipt",
            name="delivered_seq",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(number_the_log, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["chat", "rev"], name="message_chat_rev"),
        ),
        migrations.CreateModel(
            name="MessageEdit",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("text", models.TextField()),
                ("edited_at", models.DateTimeField()),
                (
                    "chat",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="messaging.chat",
                    ),
                ),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="edits",
                        to="messaging.message",
                    ),
                ),
            ],
            options={"ordering": ["message", "id"]},
        ),
        migrations.CreateModel(
            name="Reaction",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("emoji", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField()),
                (
                    "chat",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="messaging.chat",
                    ),
                ),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reactions",
                        to="messaging.message",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["message", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("message", "user", "emoji"),
                        name="reaction_unique_message_user_emoji",
                    )
                ],
            },
        ),
    ]
