"""The uvicorn server, taught to say `disconnect` (reason `server_shutdown`) before it closes sockets,
and to run its notifier process (`messaging/notifier.py`) while it serves."""

import asyncio
import logging

import uvicorn

from messaging import notifier
from messaging.realtime import gc_tuning

logger = logging.getLogger(__name__)


class ChatServer(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if not self.should_exit:
            notifier.start_beside_server(asyncio.get_running_loop())
            gc_tuning.tune()

    async def shutdown(self, sockets=None):
        from messaging.realtime.consumer import live_consumers

        consumers = list(live_consumers)
        if consumers:
            logger.info("shutting down: closing %d sockets", len(consumers))
            await asyncio.gather(
                *(consumer.server_shutdown() for consumer in consumers), return_exceptions=True
            )
        await asyncio.to_thread(notifier.stop_beside_server)
        await super().shutdown(sockets=sockets)
