"""A user of the echo AI service: sends to the shared queue, reads only their own replies.

    python examples/user_client.py alice "Hello AI!" "How are you?"

Each message carries `reply_to: ai_to_user:<user>`; streamscale's handler mode writes the reply
there. The user reads that stream through a consumer group of their own (`wsgroup_<user>`), so a
reconnecting client gets every reply it has not acknowledged, and never anyone else's.
Replies are at least once: the client skips a second reply to the same message (`in_reply_to`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys

from redis.asyncio import Redis
from redis.exceptions import ResponseError

INPUT_QUEUE = "user_messages_queue"


class User:
    """One user: `send()` to the shared input queue, `replies()` from `ai_to_user:<user_id>`."""

    def __init__(self, user_id: str, redis: Redis, queue: str = INPUT_QUEUE) -> None:
        self.user_id = user_id
        self.redis = redis
        self.queue = queue
        self.response_stream = f"ai_to_user:{user_id}"
        self.group = f"wsgroup_{user_id}"
        self.seen: set[str] = set()

    async def setup(self) -> None:
        """Create this user's response stream and group (idempotent)."""
        try:
            await self.redis.xgroup_create(self.response_stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def send(self, text: str) -> str:
        """Queue one message; returns its entry ID."""
        payload = {
            "user_id": self.user_id,
            "message": text,
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        entry_id: str = await self.redis.xadd(
            self.queue, {"data": json.dumps(payload), "reply_to": self.response_stream}
        )
        print(f"[{self.user_id}] Sent: {text}", flush=True)
        return entry_id

    async def receive(self, block_ms: int = 1000) -> list[dict[str, str]]:
        """The next replies (new ones only), acknowledged once printed."""
        answer = await self.redis.xreadgroup(
            self.group, f"consumer_{self.user_id}", {self.response_stream: ">"}, count=10,
            block=block_ms,
        )  # fmt: skip
        replies = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                original = fields.get("in_reply_to", "")
                if original not in self.seen:
                    self.seen.add(original)
                    reply = json.loads(fields["data"])
                    print(f"[{self.user_id}] Received: {reply.get('response')}", flush=True)
                    replies.append(reply)
                await self.redis.xack(self.response_stream, self.group, entry_id)
        return replies


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user_id")
    parser.add_argument("messages", nargs="*", default=["Hello AI!", "How are you?"])
    parser.add_argument(
        "--redis-url", default=os.environ.get("STREAMSCALE_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--queue", default=INPUT_QUEUE, help="The shared input stream.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Give up after this long.")
    args = parser.parse_args(argv)
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    try:
        user = User(args.user_id, redis, args.queue)
        await user.setup()
        for text in args.messages:
            await user.send(text)
        deadline = asyncio.get_running_loop().time() + args.timeout
        received = 0
        while received < len(args.messages):
            if asyncio.get_running_loop().time() > deadline:
                print(f"[{args.user_id}] timed out waiting for replies", file=sys.stderr)
                return 1
            received += len(await user.receive())
        return 0
    finally:
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
