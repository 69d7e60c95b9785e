"""Ctrl-C held back for short, bounded steps that must not be cut in half (a lock's release, the
join of threads that have finished their work)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done (main thread only; elsewhere a no-op), then
    raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
