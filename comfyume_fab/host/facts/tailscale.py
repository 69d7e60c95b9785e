"""Tailscale: the host's own tailnet address."""
from __future__ import annotations

import ipaddress

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
