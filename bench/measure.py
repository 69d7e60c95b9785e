"""Timing one command, counting the SSH connections it opened, and summarising samples."""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    scenario: str
    variant: str
    round: int
    wall_s: float
    rc: int
    connections: dict[str, int] = field(default_factory=dict)  # host -> "Accepted publickey" lines added
    extra: dict = field(default_factory=dict)
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


class SshdLogs:
    """Counts "Accepted publickey" lines that sshd (LogLevel VERBOSE) appends to each lab host's log."""

    def __init__(self, hosts):  # LabHost objects
        self.logs = {h.name: Path(h.sshd_log) for h in hosts}

    def mark(self) -> dict[str, int]:
        return {name: (p.stat().st_size if p.exists() else 0) for name, p in self.logs.items()}

    def count_since(self, mark: dict[str, int], names=None) -> dict[str, int]:
        out = {}
        for name, p in self.logs.items():
            if names is not None and name not in names:
                continue
            with open(p, "rb") as f:
                f.seek(mark.get(name, 0))
                out[name] = f.read().count(b"Accepted publickey")
        return out


PYCACHE = Path(__file__).resolve().parent / "results" / "pycache"


def base_env() -> dict:
    """The environment of every timed process: bytecode caching ON, as on a user's machine (a
    PYTHONDONTWRITEBYTECODE=1 session would recompile every module of the tool on each run); the
    caches go under bench/results/pycache instead of next to the sources."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["COMFYUME_LAB_LOCK_HELD"] = "1"  # bench/run.py holds the lab lock for the whole run
    return env


def timed(argv: list[str], *, env: dict | None = None, cwd: str | None = None, timeout: float = 300,
          input: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one process, from spawn to exit, as a user's shell would see it."""
    full_env = dict(base_env(), **(env or {}))
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input)
    return time.perf_counter() - t0, proc


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1], "p25": q[0], "p75": q[2]}


def paired_ratios(num: list[Sample], den: list[Sample]) -> list[float]:
    """Per-round ratios of two interleaved variants (round i of A over round i of B)."""
    by_round = {s.round: s.wall_s for s in den if s.ok}
    return [s.wall_s / by_round[s.round] for s in num if s.ok and s.round in by_round]
