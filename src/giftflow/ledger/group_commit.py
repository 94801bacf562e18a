"""Group commit: many operations in one database transaction, each with its own result.

Callers submit operations from any thread and get a future. One committer thread takes what is
queued, up to ``batch_operations_max`` operations or ``window_ms`` after the first one, and applies
them with :meth:`Ledger.apply_batch`. This is the hot path for gift trains: a commit (and its
fsync) is shared by the whole batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from giftflow.ledger import codes
from giftflow.ledger.model import Failure, Operation, Result
from giftflow.ledger.service import Ledger


@dataclass(frozen=True, slots=True)
class GroupCommitSettings:
    """Bounds of the group-commit path."""

    batch_operations_max: int = 1000
    window_ms: float = 2.0
    queue_operations_max: int = 20_000
    submit_timeout_ms: int = 1_000


_STOP = object()


class GroupCommitter:
    """A committer thread in front of a :class:`Ledger`."""

    def __init__(self, ledger: Ledger, settings: GroupCommitSettings | None = None) -> None:
        self.ledger = ledger
        self.settings = settings or GroupCommitSettings()
        self._queue: queue.Queue[object] = queue.Queue(self.settings.queue_operations_max)
        self._thread = threading.Thread(target=self._run, name="giftflow-group-commit",
                                        daemon=True)
        self._thread.start()

    def submit(self, operation: Operation) -> Future[Result]:
        """Queue an operation; when the queue stays full, the future holds ``overloaded``."""
        future: Future[Result] = Future()
        try:
            self._queue.put((operation, future), timeout=self.settings.submit_timeout_ms / 1000)
        except queue.Full:
            future.set_result(Failure(codes.OVERLOADED, "the commit queue is full; retry later"))
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        batch_max = min(self.settings.batch_operations_max,
                        self.ledger.limits.batch_operations_max)
        window_s = self.settings.window_ms / 1000
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + window_s
            while len(batch) < batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[object]) -> None:
        pairs: list[tuple[Operation, Future[Result]]] = batch  # type: ignore[assignment]
        try:
            results = self.ledger.apply_batch([operation for operation, _ in pairs])
        except Exception as error:  # noqa: BLE001 -- a bug: hand it to every caller, keep serving
            for _, future in pairs:
                future.set_exception(error)
            return
        for (_, future), result in zip(pairs, results, strict=True):
            future.set_result(result)
