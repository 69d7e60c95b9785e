"""How a stopped container ended: `docker inspect` of its State (exit code, OOMKilled, times), and
the sentence that says it (pure). A worker that ignores SIGTERM is SIGKILLed at the end of its
grace period (exit 137); the kernel's OOM killer also gives 137 but sets OOMKilled."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from . import ParseError

FORMAT = '{{.Name}}{{"\\t"}}{{.State.Status}}{{"\\t"}}{{.State.ExitCode}}{{"\\t"}}{{.State.OOMKilled}}'
DEFAULT_GRACE_S = 10.0  # Compose's stop_grace_period default


def command(ids: Sequence[str]) -> str:
    return shlex.join(["docker", "inspect", "--format", FORMAT, *ids])


@dataclass(frozen=True)
class Ended:
    name: str
    state: str
    exit_code: int
    oom_killed: bool

    @property
    def killed(self) -> bool:
        """Killed rather than stopped: SIGKILL (137) after the grace period, or by the OOM killer."""
        return self.exit_code == 137 or self.oom_killed

    def sentence(self, took_s: float, grace_s: float) -> str:
        if self.state in ("running", "restarting"):
            return f"{self.name} is still {self.state} after the stop"
        if self.oom_killed:
            return f"{self.name} was killed by the kernel's OOM killer (OOMKilled, exit {self.exit_code})"
        if self.exit_code == 137:
            return (f"{self.name} did not stop on its stop signal and was KILLED (SIGKILL, exit 137) after "
                    f"{took_s:.0f} s (grace period {grace_s:g} s): the signal did not reach its processes; "
                    "a job it was running was cut off")
        if self.exit_code in (0, 130, 143):
            how = {0: "exit 0", 130: "ended by SIGINT, exit 130", 143: "ended by SIGTERM, exit 143"}[self.exit_code]
            return f"{self.name} stopped cleanly ({how}) in {took_s:.1f} s"
        return f"{self.name} stopped with exit code {self.exit_code} in {took_s:.1f} s"


def parse(out: str) -> list[Ended]:
    found = []
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4 or not parts[2].lstrip("-").isdigit() or parts[3] not in ("true", "false"):
            raise ParseError("NAME<TAB>STATE<TAB>EXIT CODE<TAB>true|false per container", line)
        found.append(Ended(parts[0].lstrip("/"), parts[1], int(parts[2]), parts[3] == "true"))
    return found


def grace_seconds(compose_text: str) -> float:
    """The worker service's stop_grace_period from its compose file (Compose's default otherwise)."""
    m = re.search(r"(?m)^\s*stop_grace_period:\s*['\"]?(\d+(?:\.\d+)?)(ms|s|m)?", compose_text or "")
    if not m:
        return DEFAULT_GRACE_S
    value = float(m.group(1))
    return {"ms": value / 1000, "m": value * 60}.get(m.group(2) or "s", value)
