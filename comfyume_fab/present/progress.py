"""Progress on stderr (stdout stays clean for --json): timestamped lines for long steps, and one
self-rewriting line while a task waits."""
from __future__ import annotations

import sys
import threading
import time

from ..errors import clean
from .style import ERASE_LINE


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


class StatusLine:
    """One progress line on stderr that rewrites itself while a task waits (connect, checks,
    probe) and is erased before the answer is printed; silent when stderr is not a terminal."""

    def __init__(self, stream=None):
        import sys
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, message: str) -> None:
        if self.live:
            self.stream.write(f"{ERASE_LINE}… {message}")
            self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write(ERASE_LINE)
            self.stream.flush()


class CleanStream:
    """A text stream that escapes control characters on the way (progress lines quote hosts)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(clean(text))

    def flush(self) -> None:
        self.stream.flush()


def stderr_progress(quiet: bool = False) -> Progress:
    """A task's progress lines: on stderr, every control character from a host escaped."""
    return Progress(stream=CleanStream(sys.stderr), quiet=quiet)
