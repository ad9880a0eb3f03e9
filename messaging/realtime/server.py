"""The uvicorn server, taught to say `disconnect` (reason `server_shutdown`) before it closes sockets."""

import asyncio
import logging

import uvicorn

logger = logging.getLogger(__name__)


class ChatServer(uvicorn.Server):
    async def shutdown(self, sockets=None):
        from messaging.realtime.consumer import live_consumers

        consumers = list(live_consumers)
        if consumers:
            logger.info("shutting down: closing %d sockets", len(consumers))
            await asyncio.gather(
                *(consumer.server_shutdown() for consumer in consumers), return_exceptions=True
            )
        await super().shutdown(sockets=sockets)
