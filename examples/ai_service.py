"""The echo "AI service" of the shared-input / per-user-response pattern, as a streamscale handler.

Every user writes to one shared stream (`user_messages_queue`); any number of consumer processes
in one group (`ai_service_group`) handle the messages; each reply goes to the stream the message
names in `reply_to` (`ai_to_user:<user>`), so a user only ever sees their own responses.
Scaling the service is starting or stopping consumers: no configuration changes anywhere.

Run it (from the repository root, next to a redis-server on 127.0.0.1:6379):

    STREAMSCALE_STREAM=user_messages_queue STREAMSCALE_GROUP=ai_service_group \\
    STREAMSCALE_HANDLER=examples.ai_service:handle streamscale consume --consumer ai-worker-1

then `python examples/user_client.py alice "Hello AI!"` in other terminals.
"""

from __future__ import annotations

import asyncio
import datetime
import os

from streamscale.consumer import Message, Reject

DELAY_SECONDS = float(os.environ.get("AI_SERVICE_DELAY_SECONDS", "0.05"))
"""Simulated model latency; a real model call can take a whole second."""
WORKER = os.environ.get("STREAMSCALE_CONSUMER") or os.environ.get("POD_NAME") or "ai-worker"


async def handle(message: Message) -> dict[str, str]:
    """Answer one user message with an echo; the returned dict is the reply."""
    payload = message.payload or {}
    text = payload.get("message")
    user = payload.get("user_id")
    if not isinstance(text, str) or not isinstance(user, str):
        # Retrying cannot fix a malformed message: dead-letter it at once as `invalid`.
        raise Reject("a user message needs text fields `user_id` and `message`")
    await asyncio.sleep(DELAY_SECONDS)
    return {
        "user_id": user,
        "response": f"Echo: {text}",
        "worker_id": WORKER,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
    }
