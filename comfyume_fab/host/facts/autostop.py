"""Autostop as the app host shows it: the files installed for a worker host (their digests and
whether its container runs), and the state files the program writes (`host.agents.autostop`), read
by `status` as one extra section of the app host's state read.
"""
from __future__ import annotations

import json

from .. import commands as cmd

STATE_GLOB = "autostop/*/state/state.json"


def state_command(workdir: str) -> str:
    """Every autostop state file of the app host, one JSON line each (nothing when none)."""
    return f"cat {cmd.q(cmd.workdir_path(workdir))}/{STATE_GLOB} 2>/dev/null; true"


def parse_states(text: str) -> dict[str, dict]:
    """host -> its state (a line that is not a state is skipped: status then says none was read)."""
    out: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("host"), str):
            out[data["host"]] = data
    return out


def installed_command(workdir: str, folder: str, project: str, paths) -> str:
    """The sha256 of each installed file (the env file's too: compared in memory, never shown), then
    the state of the project's container."""
    base = cmd.q(cmd.workdir_path(workdir, folder))
    label = cmd.q(f"label=com.docker.compose.project={project}")
    return (f"cd {base} 2>/dev/null && sha256sum -- {' '.join(cmd.q(p) for p in paths)} 2>/dev/null; "
            f"echo \"@container $(docker ps -a --filter {label} --format '{{{{.State}}}}' | head -n1)\"")


def parse_installed(text: str) -> tuple[dict[str, str], str]:
    """(relative path -> sha256, the container's state or '' when there is none)."""
    digests, state = {}, ""
    for line in text.splitlines():
        if line.startswith("@container"):
            state = line[len("@container"):].strip()
            continue
        parts = line.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            digests[parts[1].strip().lstrip("*")] = parts[0]
    return digests, state
