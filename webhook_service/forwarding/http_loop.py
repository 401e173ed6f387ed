"""The forwarder's event loop, on a thread of its own: every attempt of every destination
runs on it, so that waiting for consumers costs no thread each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")
CALL_TIMEOUT_SECONDS = 30


class HttpLoop:
    """An asyncio loop running on a daemon thread until stop()."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="forward-http", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, Result]) -> Result:
        """Run `coroutine` on the loop and wait for its result (raises what it raises)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CALL_TIMEOUT_SECONDS)

    def launch(self, coroutines: list[Coroutine]) -> None:
        """Start these on the loop without waiting for them (one wake-up for them all)."""
        self._loop.call_soon_threadsafe(self._start, coroutines)

    def _start(self, coroutines: list[Coroutine]) -> None:
        for coroutine in coroutines:
            task = self._loop.create_task(coroutine)
            # The loop keeps only weak references to its tasks.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """Stop the loop (after what was launched has ended or been given up) and its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_SECONDS)
        if not self._loop.is_running():
            self._loop.close()
