"""`manage.py notifier`: the notifier alone, for a deployment that keeps it out of the serving processes."""

import signal
import threading

from django.core.management.base import BaseCommand

from messaging.notifier import Notifier


class Command(BaseCommand):
    help = (
        "Decide and send notifications of new messages (Web Push, webhook) until stopped."
        " Serving processes run one each unless NOTIFIER_ENABLED=0; several may run at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="one round, waiting for its sends, then exit"
        )

    def handle(self, *args, once, **options):
        notifier = Notifier()
        if once:
            notifier.poll(settle=True)
            notifier.pool.shutdown()
            return
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        notifier.start()
        self.stderr.write("notifier running; Ctrl-C stops it")
        stopped.wait()
        notifier.stop()
