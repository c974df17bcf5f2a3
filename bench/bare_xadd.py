"""The reference front door of `make bench`: a bare aiohttp + uvloop endpoint, one process, that
appends each POSTed JSON body to a Redis stream and answers 202, and nothing else (no
authentication, validation or PostgreSQL). Pulse's accept rate is compared with it.

    python -m bench.bare_xadd --redis-url URL --port PORT --stream KEY --mode one|pipelined

``one``: one awaited XADD per request. ``pipelined``: the XADDs of all requests in flight go
to Redis as one pipeline per loop tick, each request answered once its own entry is appended.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop
from aiohttp import web
from redis.asyncio import Redis

ACCEPTED = json.dumps({"status": "queued"})


class Batcher:
    """Collects the appends of one loop tick and sends them as one pipeline."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.waiting: list[tuple[bytes, asyncio.Future[None]]] = []

    def append(self, body: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self.waiting:
            loop.call_soon(lambda: asyncio.ensure_future(self.flush()))
        self.waiting.append((body, future))
        return future

    async def flush(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for body, _ in batch:
                    pipe.xadd(self.stream, {"body": body})
                await pipe.execute()
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)


def make_app(redis: Redis, stream: str, mode: str) -> web.Application:
    batcher = Batcher(redis, stream)

    async def one(request: web.Request) -> web.Response:
        await redis.xadd(stream, {"body": await request.read()})
        return web.Response(status=202, text=ACCEPTED, content_type="application/json")

    async def pipelined(request: web.Request) -> web.Response:
        await batcher.append(await request.read())
        return web.Response(status=202, text=ACCEPTED, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/notifications/", one if mode == "one" else pipelined)
    app.router.add_get("/healthz", lambda _: _ok())
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok")


async def serve(redis_url: str, port: int, stream: str, mode: str) -> None:
    redis: Redis = Redis.from_url(redis_url, max_connections=None)
    runner = web.AppRunner(make_app(redis, stream, mode), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await runner.cleanup()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--mode", choices=("one", "pipelined"), required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.redis_url, args.port, args.stream, args.mode))


if __name__ == "__main__":
    main()
