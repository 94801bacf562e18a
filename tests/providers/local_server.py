"""What the local provider servers share: ``with Server() as running`` starts and stops them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class LocalServer:
    """A server with ``start()`` and ``stop()`` used as a context manager."""

    def start(self) -> Self:
        """Start serving (each server says how)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving (each server says how)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
