"""The notifier: the worker that decides and sends notifications, a process of its own beside each server.

Every NOTIFY_POLL_MS it records what became of the sends that finished, finds
the chats with new messages (a primary-key range of the message table past
its last look, read a little behind so that a transaction committing late is
not missed) and watches each for NOTIFY_DELAY_MS and a margin, claims the
members due in the watched chats (`notifications.claim`: once across
processes), and takes the due dispatches, new ones and retries, for a bounded
pool of sending threads that do HTTP and nothing else. The rules themselves
are in `messaging/notifications.py`.

It runs as `manage.py notifier`, which each `manage.py serve` starts as its own
child process on idle CPU time only (`--idle`: SCHED_IDLE) and restarts if it dies (`Supervisor`),
rather than as a thread of the serving process: encrypting and posting a
thousand pushes is seconds of Python, and in the server's process that would
be seconds of the GIL taken from the event loop (`make bench` measured acks
going from 7 to 300 ms at p99 that way). A process of its own shares no
interpreter with the server, and on PostgreSQL takes no lock that the storing
of a message waits for; on SQLite its few short write transactions a second
share the one write lock with the storing of messages (docs/benchmarks.md).
"""

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils import timezone

from messaging import metrics, notifications, webhook, webpush
from messaging.models import NotificationDispatch

logger = logging.getLogger(__name__)

MANAGE = Path(__file__).resolve().parents[1] / "manage.py"

LAG = 2.0  # seconds: each look at new messages starts from the mark of this long ago
WATCH_MARGIN = 30.0  # seconds a chat stays watched past NOTIFY_DELAY_MS after its last message
CATCH_UP = timedelta(hours=1)  # at start, chats active this recently are looked at
IN_FLIGHT_PER_WORKER = 50  # dispatches taken but not finished, per sending thread
PRUNE_EVERY = 600  # polls


class Notifier:
    """The poll loop's state: watched chats, the message-id mark, the sends in flight."""

    def __init__(self, *, workers: int | None = None):
        workers = workers or settings.NOTIFY_SEND_WORKERS
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="notify-send")
        self.capacity = workers * IN_FLIGHT_PER_WORKER
        self.results: queue.SimpleQueue = queue.SimpleQueue()  # (dispatch id, kind, outcome)
        self.in_flight: dict[int, Future] = {}
        self.watch: dict[int, float] = {}  # chat id -> monotonic time of its latest new message
        self.marks: deque[tuple[float, int]] = deque()  # (when, latest message id then)
        self.polls = 0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.failing = False
        self.outcomes: dict[int, str] = {}  # finished, not yet written (the database may be away)

    # ------------------------------------------------------------ the loop

    def start(self) -> "Notifier":
        """Poll in a thread of its own until `stop()`."""
        self.thread = threading.Thread(target=self.run, name="notifier", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        """Stop polling; sends in flight get `timeout` seconds to finish and be recorded (a
        dispatch left unrecorded is sent again once its lease ends)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout + 5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run(self, *, parent: int | None = None) -> None:
        """Poll until `stop()` (or until the process `parent` is gone), then let the sends in
        flight finish for a few seconds and record them."""
        interval = settings.NOTIFY_POLL_MS / 1000
        try:
            while not self.stopping.is_set():
                if parent is not None and os.getppid() != parent:
                    logger.warning("notifier: the server process %s is gone; stopping", parent)
                    break
                started = time.monotonic()
                self._poll_logging_failures()
                self.stopping.wait(max(0.0, interval - (time.monotonic() - started)))
            wait_for_futures(list(self.in_flight.values()), timeout=5)
            self._poll_logging_failures(record_only=True)
        finally:
            connections.close_all()

    def _poll_logging_failures(self, *, record_only: bool = False) -> None:
        try:
            if record_only:
                self.record()
            else:
                self.poll()
        except Exception as exc:
            if not self.failing:  # once per outage, not once a second
                logger.warning("notifier: %s; retrying every poll", exc)
                self.failing = True
            connections.close_all()  # a broken connection comes back on the next poll
        else:
            if self.failing:
                logger.warning("notifier: working again")
                self.failing = False

    def poll(self, *, settle: bool = False) -> None:
        """One round: record, discover, claim, send. `settle`: wait for this round's sends and
        record them too (tests, and the last round of `manage.py notifier --once`)."""
        now = timezone.now()
        self.record()
        self._discover()
        due = notifications.due_members(list(self.watch), now=now)
        if due:
            metrics.NOTIFICATIONS_CLAIMED.inc(len(notifications.claim(due, now=now)))
        room = self.capacity - len(self.in_flight)
        if room > 0:
            self._send(notifications.take_due_dispatches(now=now, limit=room))
        if settle:
            wait_for_futures(list(self.in_flight.values()))
            self.record()
        self.polls += 1
        if self.polls % PRUNE_EVERY == 0:
            notifications.prune(now=now)

    # ------------------------------------------------------------ which chats

    def _discover(self) -> None:
        now = time.monotonic()
        if not self.marks:  # the first round: what may have been missed while nobody watched
            top = notifications.latest_message_id()
            for chat_id in notifications.chats_active_since(timezone.now() - CATCH_UP):
                self.watch[chat_id] = now
            self.marks.append((now, top))
            return
        while len(self.marks) > 1 and self.marks[1][0] <= now - LAG:
            self.marks.popleft()
        found = notifications.chats_with_messages_after(self.marks[0][1])
        for chat_id in found:
            self.watch[chat_id] = now
        self.marks.append((now, max([self.marks[-1][1], *found.values()])))
        horizon = now - settings.NOTIFY_DELAY_MS / 1000 - WATCH_MARGIN
        self.watch = {chat_id: at for chat_id, at in self.watch.items() if at >= horizon}

    # ------------------------------------------------------------ sending

    def _send(self, dispatches: list[NotificationDispatch]) -> None:
        payloads: dict[int, dict] = {}
        for dispatch in dispatches:
            notification = dispatch.notification
            if notification.pk not in payloads:
                payloads[notification.pk] = notifications.payload_of(notification)
            payload = payloads[notification.pk]
            if dispatch.kind == NotificationDispatch.Kind.WEBHOOK:
                if not payload or not settings.NOTIFY_WEBHOOK_URL:
                    self._finished(dispatch, notifications.DROPPED)
                    continue
                call = (
                    webhook.send,
                    notifications.webhook_fields(payload),
                    {"notification_id": notification.pk},
                )
            else:
                if not payload or str(dispatch.user_id) not in payload["userIds"]:
                    self._finished(dispatch, notifications.DROPPED)
                    continue
                call = (
                    webpush.send,
                    dispatch.subscription,
                    payload,
                    {"topic": f"chat-{payload['chatId']}"},
                )
            future = self.pool.submit(*call[:-1], **call[-1])
            self.in_flight[dispatch.pk] = future
            future.add_done_callback(
                lambda done, dispatch=dispatch: self._finished(dispatch, _outcome(done))
            )

    def _finished(self, dispatch: NotificationDispatch, outcome: str) -> None:
        self.results.put((dispatch.pk, dispatch.kind, outcome))

    def record(self) -> None:
        """Write the outcomes of the sends that finished since the last call."""
        while True:
            try:
                dispatch_id, kind, outcome = self.results.get_nowait()
            except queue.Empty:
                break
            self.outcomes[dispatch_id] = outcome
            self.in_flight.pop(dispatch_id, None)
            metrics.NOTIFICATION_DISPATCHES.labels(kind, outcome).inc()
        if self.outcomes:
            notifications.record(self.outcomes, now=timezone.now())
            self.outcomes = {}


def _outcome(future: Future) -> str:
    try:
        return future.result()
    except Exception as exc:  # a bug or an odd answer: try again later rather than lose it
        logger.warning("notifier: a send failed: %r", exc)
        return notifications.RETRY


# ---------------------------------------------------------------- the serving process's child


class Supervisor:
    """`manage.py notifier` as a child of this serving process: started with the server,
    restarted if it dies, stopped with the server; it exits by itself if this process dies."""

    CHECK_SECONDS = 5.0

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.task = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(MANAGE), "notifier", "--parent", str(os.getpid()), "--idle"],
            cwd=MANAGE.parent,
            stdin=subprocess.DEVNULL,
        )

    async def watch(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.CHECK_SECONDS)
            if self.process is not None and self.process.poll() is not None:
                logger.warning(
                    "notifier process exited with %s; starting another", self.process.returncode
                )
                self.start()

    def stop(self, timeout: float = 10) -> None:
        if self.task is not None:
            self.task.cancel()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_supervisor: Supervisor | None = None


def start_beside_server(loop) -> None:
    """At server start: this process's notifier, if NOTIFIER_ENABLED."""
    global _supervisor
    if _supervisor is None and settings.NOTIFIER_ENABLED:
        from biogram.logging import process_task

        _supervisor = Supervisor()
        _supervisor.start()
        _supervisor.task = process_task(loop, _supervisor.watch(), name="notifier-supervisor")


def stop_beside_server() -> None:
    global _supervisor
    if _supervisor is not None:
        _supervisor.stop()
        _supervisor = None
