"""`manage.py notifier`: the notifier (messaging/notifier.py); `manage.py serve` runs one beside itself."""

import os
import signal

from django.core.management.base import BaseCommand

from messaging.notifier import Notifier


class Command(BaseCommand):
    help = (
        "Decide and send notifications of new messages (Web Push, webhook) until stopped."
        " Each `manage.py serve` runs one unless NOTIFIER_ENABLED=0; several may run at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="one round, waiting for its sends, then exit"
        )
        parser.add_argument(
            "--parent", type=int, help="stop when this process (the server that started it) exits"
        )
        parser.add_argument(
            "--idle",
            action="store_true",
            help="run only on CPU time nobody else wants (Linux SCHED_IDLE; else nice 19)",
        )

    def handle(self, *args, once, parent, idle, **options):
        if idle:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except (AttributeError, OSError):
                os.nice(19)
        notifier = Notifier()
        if once:
            notifier.poll(settle=True)
            notifier.pool.shutdown()
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: notifier.stopping.set())
        notifier.run(parent=parent)
        notifier.pool.shutdown(wait=False, cancel_futures=True)
