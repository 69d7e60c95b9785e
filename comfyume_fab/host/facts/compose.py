"""Docker Compose: which Compose a host has (v2, the legacy Python docker-compose, or none)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import Fact, field, fixed

# Where the Docker CLI looks for the Compose v2 plugin, in its order (docker/cli's plugin manager).
CLI_PLUGIN_DIRS = ('"${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"', "/usr/local/lib/docker/cli-plugins",
                   "/usr/local/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins",
                   "/usr/libexec/docker/cli-plugins")

# What `docker compose version` prints, from the plugin binary the Docker CLI would run (one Go
# program started instead of three: the CLI, the plugin's metadata query, the plugin; ~60 ms of
# CPU less per host). Falls back to `docker compose version` when no plugin folder has it.
VERSION_COMMAND = (f"cfab_c=; for d in {' '.join(CLI_PLUGIN_DIRS)}; do if [ -x \"$d/docker-compose\" ]; then "
                   f"cfab_c=\"$d/docker-compose\"; break; fi; done; "
                   f"if [ -n \"$cfab_c\" ]; then \"$cfab_c\" version; else docker compose version; fi")
LEGACY_COMMAND = "command -v docker-compose >/dev/null && docker-compose version --short"


@dataclass(frozen=True)
class ComposeVersion:
    kind: str | None  # "v2" (the Go plugin/binary, any major >= 2), "legacy" (Python docker-compose 1.x), None
    version: str  # "2.26.1", "2.26.1-4" (a distribution's build), "1.29.2"; "" when kind is None


_COMPOSE_VERSION = re.compile(r"(?i)^\s*docker[ -]compose version:?\s+v?(\d+\.\d+\.\d+[^\s,]*)")
_BARE_VERSION = re.compile(r"^\s*v?(\d+\.\d+\.\d+\S*)\s*$")


def parse_compose_version(text: str) -> ComposeVersion:
    """`docker compose version` / `docker-compose version` / `--version` / `--short`; kind None if no compose."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    match = _COMPOSE_VERSION.match(first) or _BARE_VERSION.match(first)
    if not match:
        return ComposeVersion(kind=None, version="")
    version = match.group(1)
    major = int(version.split(".", 1)[0])
    return ComposeVersion(kind="legacy" if major < 2 else "v2", version=version)


def _fill_version(st, code: int, out: str) -> None:
    st.compose = parse_compose_version(out) if code == 0 else None


def _fill_legacy(st, code: int, out: str) -> None:
    st.legacy_compose = out.strip() if code == 0 and out.strip() else None


VERSION = Fact("compose", fixed(VERSION_COMMAND), _fill_version, preflight=True,
               fields=(field("compose", "ComposeVersion | None"),))
LEGACY = Fact("legacy_compose", fixed(LEGACY_COMMAND), _fill_legacy, preflight=True,
              fields=(field("legacy_compose", "str | None"),))
