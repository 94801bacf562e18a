"""Group commit: many operations in one database transaction, each with its own result.

Callers submit requests (one or more items and a completion callback) from any thread. One
committer thread takes what is queued, up to ``batch_operations_max`` items or whatever arrived
within ``window_us`` of the first, and applies them with one batch call: the ledger's
:meth:`Ledger.apply_batch` for operations, or a domain's own batch call (the economy's
``send_gifts`` for gift requests). This is the hot path for gift trains: a commit (and its fsync)
is shared by the whole batch, and each item still gets its own result.

Completion is a callback per request, called on the committer thread once the batch committed.
An event loop passes a callback that hands the results over with one ``call_soon_threadsafe``
per request, so a batch of a thousand gifts wakes the loop once per request rather than paying a
thread hand-off per gift. :meth:`GroupCommitter.submit` wraps that in a
:class:`concurrent.futures.Future` for threaded callers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from giftflow.ledger import codes
from giftflow.ledger.model import Failure, Result
from giftflow.ledger.service import Ledger

logger = logging.getLogger(__name__)

Done = Callable[[list[Result]], None]
"""Receives the results of one request, in the order of its operations."""

T = TypeVar("T")
"""What a committer batches: ledger operations, or a domain's requests."""


@dataclass(frozen=True, slots=True)
class GroupCommitSettings:
    """Bounds of the group-commit path."""

    batch_operations_max: int = 1000
    window_us: int = 2_000
    queue_operations_max: int = 20_000
    submit_timeout_ms: int = 1_000


_STOP = object()


class GroupCommitter(Generic[T]):
    """A committer thread in front of a batch call: a :class:`Ledger`, or a domain's own.

    Given a :class:`Ledger`, it batches operations through :meth:`Ledger.apply_batch`. Given a
    callable, it batches whatever that callable takes (one result per item, in order), at most
    ``batch_max`` items at a time.
    """

    def __init__(self, target: Ledger | Callable[[Sequence[T]], list[Result]],
                 settings: GroupCommitSettings | None = None, *,
                 batch_max: int | None = None) -> None:
        self.settings = settings or GroupCommitSettings()
        if isinstance(target, Ledger):
            self._apply: Callable[[Sequence[T]], list[Result]] = target.apply_batch  # type: ignore[assignment]
            batch_max = target.limits.batch_operations_max
        else:
            self._apply = target
        self._batch_max = min(self.settings.batch_operations_max,
                              batch_max or self.settings.batch_operations_max)
        # SimpleQueue is implemented in C and is several times cheaper per item than
        # queue.Queue; the bound on queued operations is kept with a counter.
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._queued_operations = 0
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="giftflow-group-commit",
                                        daemon=True)
        self._thread.start()

    def submit_many(self, operations: Sequence[T], done: Done) -> bool:
        """Queue items; ``done`` gets their results after they commit.

        Returns False, without queueing anything, when the queue stays full for
        ``submit_timeout_ms`` or the request is larger than one batch: the caller answers
        ``overloaded`` (or splits the request).
        """
        count = len(operations)
        if not 0 < count <= self._batch_max:
            return False
        if (self._queued_operations + count > self.settings.queue_operations_max
                and not self._wait_for_room(count)):
            return False
        # Submitters that race past the check can exceed the bound by at most one request each.
        with self._count_lock:
            self._queued_operations += count
        self._queue.put((operations, done))
        return True

    def submit(self, operation: T) -> Future[Result]:
        """Queue one item; the future holds its result (``overloaded`` when full)."""
        future: Future[Result] = Future()
        if not self.submit_many((operation,), lambda results: future.set_result(results[0])):
            future.set_result(Failure(codes.OVERLOADED, "the commit queue is full; retry later"))
        return future

    @property
    def queued(self) -> int:
        """Items waiting for a commit (for a gauge)."""
        return self._queued_operations

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _wait_for_room(self, count: int) -> bool:
        deadline_ns = time.monotonic_ns() + self.settings.submit_timeout_ms * 1_000_000
        pause_s = 0.0005
        while self._queued_operations + count > self.settings.queue_operations_max:
            if time.monotonic_ns() >= deadline_ns:
                return False
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.01)
        return True

    def _run(self) -> None:
        carried: tuple[Sequence[T], Done] | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is _STOP:
                return
            batch: list[tuple[Sequence[T], Done]] = [first]  # type: ignore[list-item]
            size = len(batch[0][0])
            deadline_ns = time.monotonic_ns() + self.settings.window_us * 1_000
            stopping = False
            while size < self._batch_max:
                item = self._next_item(deadline_ns)
                if item is None:
                    break
                if item is _STOP:
                    stopping = True
                    break
                request: tuple[Sequence[T], Done] = item  # type: ignore[assignment]
                if size + len(request[0]) > self._batch_max:
                    carried = request
                    break
                batch.append(request)
                size += len(request[0])
            self._commit(batch, size)
            if stopping:
                return

    def _next_item(self, deadline_ns: int) -> object | None:
        """The next queued item, waiting at most until ``deadline_ns``; None when none came.

        What is already queued is taken without a timer: only an empty queue pays for a wait.
        """
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            remaining_ns = deadline_ns - time.monotonic_ns()
            if remaining_ns <= 0:
                return None
            try:
                return self._queue.get(timeout=remaining_ns / 1e9)
            except queue.Empty:
                return None

    def _commit(self, batch: list[tuple[Sequence[T], Done]], size: int) -> None:
        operations = [operation for request in batch for operation in request[0]]
        try:
            results = self._apply(operations)
        except Exception as error:
            # A bug: log it with its traceback, answer every caller, and keep serving.
            logger.exception("group commit of %d operations failed", len(operations))
            failure = Failure(codes.INTERNAL_ERROR, f"the batch failed: {error!r}")
            results = [failure] * len(operations)
        with self._count_lock:
            self._queued_operations -= size
        start = 0
        for operations_of_request, done in batch:
            end = start + len(operations_of_request)
            try:
                done(results[start:end])
            except Exception:
                # A caller's callback failed (a cancelled future, say); the others still get
                # their results and the committer keeps serving.
                logger.exception("a group-commit completion callback failed")
            start = end
