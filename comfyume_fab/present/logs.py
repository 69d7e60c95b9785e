"""Log lines as `invoke logs` writes them: `host/service text`, the prefix in a stable colour per
host on a terminal (ops/logs.py gives each line, already cleaned and masked, to a `LogLines`)."""
from __future__ import annotations

from .style import RESET, host_colour


class LogLines:
    """render(host, service, text) -> the line to write; the prefixes are built once each."""

    def __init__(self, colour: bool = False):
        self.colour = colour
        self._prefixes: dict[tuple[str, str], str] = {}

    def __call__(self, host: str, service: str, text: str) -> str:
        p = self._prefixes.get((host, service))
        if p is None:
            p = f"{host}/{service}"
            if self.colour:
                p = f"\x1b[{host_colour(host)}m{p}{RESET}"
            self._prefixes[host, service] = p
        return f"{p} {text}\n"
