"""The facts start-all and status learn about a host before touching it, as named sections of
one script (host.state runs them in one round trip and parses each with its subject's parser)."""
from __future__ import annotations

from . import compose, docker, nvidia, tailscale


def preflight_parts() -> list[tuple[str, str]]:
    """(section name, command) for the engine, Compose, the GPU, the runtimes and Tailscale."""
    return [
        ("engine", docker.ENGINE_COMMAND),
        ("compose", compose.VERSION_COMMAND),
        ("legacy_compose", compose.LEGACY_COMMAND),
        ("nvidia", nvidia.QUERY_COMMAND),
        ("runtimes", docker.RUNTIMES_COMMAND),
        ("nvidia_toolkit", docker.NVIDIA_TOOLKIT_COMMAND),
        ("tailscale", tailscale.COMMAND),
    ]
