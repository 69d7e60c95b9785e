"""Run one comfyume-fab task exactly as `invoke TASK ...` does, in this process, and record a
timeline of every SSH operation (connect, remote command, upload, tunnel) with start and end.

    python bench/toolrun.py --trace OUT.json [--profile OUT.prof] -- start-all --hosts INV

The instrumentation wraps comfyume_fab.host.ssh.remote.Remote's methods from the outside (no change to
the tool); it costs a list append per operation. Times are seconds since interpreter start.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time

T0 = time.monotonic()  # as close to interpreter start as a script gets (~20 ms after exec)
REPO = __file__.rsplit("/bench/", 1)[0]


def instrument(events: list) -> None:
    from comfyume_fab.host.ssh import remote as R
    orig_run, orig_open, orig_put, orig_tunnel = R.Remote.run, R.Remote.open, R.Remote.put, R.Remote.tunnel

    def rec(host, kind, t, detail="", step=""):
        events.append({"host": host, "kind": kind, "start": round(t - T0, 4),
                       "end": round(time.monotonic() - T0, 4), "step": step, "detail": detail[:160],
                       "thread": threading.current_thread().name})

    def run(self, command, **kw):
        t = time.monotonic()
        try:
            return orig_run(self, command, **kw)
        finally:
            rec(self.name, "run", t, command, kw.get("step", "run"))

    def open_(self):
        t = time.monotonic()
        try:
            return orig_open(self)
        finally:
            rec(self.name, "connect", t)

    def put(self, path, data, *a, **kw):
        t = time.monotonic()
        try:
            return orig_put(self, path, data, *a, **kw)
        finally:
            rec(self.name, "put", t, path)

    @contextlib.contextmanager
    def tunnel(self, host, port, timeout):
        t = time.monotonic()
        try:
            with orig_tunnel(self, host, port, timeout) as sock:
                yield sock
        finally:
            rec(self.name, "tunnel", t, f"{host}:{port}")

    R.Remote.run, R.Remote.open, R.Remote.put, R.Remote.tunnel = run, open_, put, tunnel


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", required=True)
    ap.add_argument("--profile")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args()
    args = [a for a in ns.args if a != "--"]
    events: list = []
    sys.path.insert(0, REPO)
    import os
    os.chdir(REPO)
    prof = None
    if ns.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    instrument(events)
    t_task = time.monotonic()
    code = 0
    from invoke.main import program
    try:
        program.run(["invoke", *args], exit=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    t_end = time.monotonic()
    if prof:
        prof.disable()
        prof.dump_stats(ns.profile)
    with open(ns.trace, "w") as f:
        json.dump({"rc": code, "instrumented_at": round(t_task - T0, 4), "end": round(t_end - T0, 4),
                   "events": events}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
