"""Worker threads for handlers that must not run on the I/O thread.

Daemon threads, not ``concurrent.futures``: a handler that hangs for ever must not keep the process from
exiting after a stop (the executor's threads are joined at interpreter exit).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["WorkerPool"]

Job = Callable[[], None]


class WorkerPool:
    """Up to ``size`` daemon threads taking jobs in order; started on first use."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        self._jobs.put(job)
        if len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._work, name=f"{self._name} {len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self) -> None:
        """Let idle threads end; a thread still in a hung handler ends when (if ever) it returns."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
