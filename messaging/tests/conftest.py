"""Fixtures of the notification tests: the local push service and the webhook receiver."""

import pytest

from messaging.tests.push_service import Receiver


@pytest.fixture
def push_service():
    """A local Web Push service: records (and decrypts) what the server pushes."""
    service = Receiver().start()
    yield service
    service.stop()


@pytest.fixture
def webhook_receiver():
    """A local webhook receiver answering 200."""
    receiver = Receiver(default=200).start()
    yield receiver
    receiver.stop()
