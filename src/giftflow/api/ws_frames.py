"""uvicorn's WebSocket protocol with one ASGI extension: ``giftflow.frames``, for fan-out.

The event stream sends the same frame to every subscriber of a stream. Through plain ASGI each
of those is a ``websocket.send`` message: a coroutine per subscriber and per frame, and the
frame built again for each connection. With many subscribers that is most of the server's time
(measured in ``docs/PERFORMANCE.md``). So ``giftflow serve`` runs uvicorn with
:class:`FramesProtocol`, uvicorn's own sans-I/O WebSocket protocol that also offers, in the
connection's scope (``scope["extensions"]["giftflow.frames"]["writer"]``, as the ASGI
specification allows servers to extend it), a :class:`FrameWriter`: it writes a frame that was
serialized once, by ``websockets`` itself, straight to the connection's transport, and tells how
many bytes wait in that transport, so that the app can drop a subscriber that does not read.

Server frames are never masked, so one serialized frame fits every connection. It is sent
uncompressed (RSV1 clear), which RFC 7692 allows on a connection that negotiated compression.
An application served without the extension (the test client, another server) uses plain ASGI.
"""

from __future__ import annotations

from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

EXTENSION: Final = "giftflow.frames"
PROTOCOL: Final = f"{__name__}:FramesProtocol"
"""What to pass to uvicorn as ``ws`` (``--ws``)."""


def text_frame(text: bytes) -> bytes:
    """One unmasked WebSocket text frame holding ``text`` (UTF-8), for any connection."""
    return Frame(Opcode.TEXT, text).serialize(mask=False)


class FrameWriter:
    """One connection's transport, for serialized frames.

    The fan-out writes to it (``transport.write``) and asks how many bytes wait in it
    (``transport.get_write_buffer_size()``); it writes nothing once :meth:`closing` is true,
    when the closing handshake has begun.
    """

    __slots__ = ("_protocol", "transport")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self.transport = protocol.transport

    def closing(self) -> bool:
        """Whether the connection is closing (a close frame went out, or the socket is)."""
        return self._protocol.close_sent or self.transport.is_closing()


class FramesProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with the ``giftflow.frames`` extension."""

    def handle_connect(self, event: Request) -> None:
        """Build the scope as uvicorn does, then offer the writer (before the app runs)."""
        super().handle_connect(event)
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[EXTENSION] = {"writer": FrameWriter(self)}


def writer_of(scope: Any) -> FrameWriter | None:  # noqa: ANN401 -- an ASGI scope
    """The connection's frame writer, when the server offers one."""
    offered = (scope.get("extensions") or {}).get(EXTENSION)
    return offered.get("writer") if offered else None
