"""The two applications ``giftflow bench api`` serves, chosen by ``GIFTFLOW_BENCH_APP``.

- ``full``: giftflow's own application (``create_app``): authentication, strict validation,
  ownership, problem responses, the gift committer.
- ``bare``: a minimal ASGI app that calls the same domain path (the same services and gift
  committer, so the same group-committed ``send_gifts``) with nothing else: no framework, no
  authentication, the body decoded without checks.

Both read the store and data directory from the usual ``GIFTFLOW_*`` settings.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson

from giftflow.api.app import create_app
from giftflow.bootstrap import build_services, tune_garbage_collector
from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied, Result
from giftflow.settings import Settings

_JSON = [(b"content-type", b"application/json")]


def _bare(services: Any) -> Any:  # noqa: ANN401 -- a raw ASGI callable
    creators: dict[str, str] = {}
    counter = [0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    services.gifts.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        data = orjson.loads(body)
        stream_id = scope["path"].split("/")[3]
        creator = creators.get(stream_id)
        if creator is None:
            stream = await asyncio.to_thread(services.streams.get, stream_id)
            creator = creators[stream_id] = stream.creator_id
        counter[0] += 1
        gift = GiftRequest(data["sender_id"], creator, data["gift_id"], data["count"],
                           stream_id, f"bare-{os.getpid()}-{counter[0]}")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        services.gifts.submit_many(
            (gift,), lambda results: loop.call_soon_threadsafe(answer.set_result, results[0]))
        result = await answer
        if isinstance(result, Applied):
            status, out = 201, {"id": result.response["gift"],
                                "coins_spent": result.response["coins"],
                                "diamonds_credited": result.response["diamonds"],
                                "sender_coins": result.response["sender_coins"]}
        else:
            status, out = 422, {"code": result.code}
        encoded = orjson.dumps(out)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON, (b"content-length", str(len(encoded)).encode())]})
        await send({"type": "http.response.body", "body": encoded})

    return app


def _build() -> Any:  # noqa: ANN401 -- an ASGI application
    services = build_services(Settings())
    tune_garbage_collector()  # as ``giftflow serve`` does
    if os.environ.get("GIFTFLOW_BENCH_APP") == "bare":
        return _bare(services)
    return create_app(services)


app = _build()
