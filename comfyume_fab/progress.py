"""Progress lines for long steps, on stderr (stdout stays clean for --json)."""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.t0:6.1f}s] WARNING: {message}", file=self.stream, flush=True)
