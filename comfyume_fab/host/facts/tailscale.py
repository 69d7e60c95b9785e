"""Tailscale: the host's own tailnet address."""
from __future__ import annotations

import ipaddress

from . import Fact, field, fixed

COMMAND = "command -v tailscale >/dev/null && tailscale ip -4"


def parse_tailscale_ip(text: str) -> str | None:
    """The first IPv4 address printed by `tailscale ip -4`, or None (e.g. 'Tailscale is stopped.')."""
    for line in text.splitlines():
        candidate = line.strip()
        try:
            return str(ipaddress.IPv4Address(candidate))
        except ValueError:
            continue
    return None


def _fill(st, code: int, out: str) -> None:
    st.tailscale_ip = parse_tailscale_ip(out) if code == 0 else None


IP = Fact("tailscale", fixed(COMMAND), _fill, preflight=True, fields=(field("tailscale_ip", "str | None"),))
