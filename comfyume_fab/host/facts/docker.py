"""The Docker engine: its version and runtimes, and a compose project's containers.

`containers_command(project)` lists every container of the project with `docker inspect` and
`INSPECT_FORMAT`; `parse_inspect` reads what it prints into `ContainerInfo`. The rules that read a
container (`ok`, `crash_looping`, `describe`) live on `ContainerInfo`, so every caller agrees.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Sequence

from . import Fact, ParseError, field, fixed

ENGINE_COMMAND = "docker version --format '{{.Server.Version}}'"
# Only a GPU host's runtimes matter (checks.preflight); `docker info` costs ~0.1-0.2 s of CPU.
RUNTIMES_COMMAND = ("if command -v nvidia-smi >/dev/null 2>&1; then docker info --format '{{json .Runtimes}}'; "
                    "else echo '{}'; fi")
NVIDIA_TOOLKIT_COMMAND = "command -v nvidia-container-runtime-hook || command -v nvidia-ctk"
CRASH_LOOP_RESTARTS = 3  # a container restarted this often is crash-looping

# One line per container, fields separated by TABs (Go's "\t" in a template string). It reads only
# labels and state, never .Config.Env: the environment holds the secrets. `.ID` (not `.Id`) makes
# the docker CLI execute it on its typed struct, where a missing Health or label prints as ""
# (on the raw-JSON fallback, `.State.Health` of a container without a healthcheck is an error).
INSPECT_FIELDS = ("id", "name", "service", "project", "state", "health", "restart_count", "created",
                  "started_at", "finished_at", "exit_code", "env_hash", "image")
ENV_HASH_LABEL = "org.comfyume.env-hash"
INSPECT_FORMAT = '{{"\\t"}}'.join((
    "{{.ID}}",
    "{{.Name}}",
    '{{index .Config.Labels "com.docker.compose.service"}}',
    '{{index .Config.Labels "com.docker.compose.project"}}',
    "{{.State.Status}}",
    "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
    "{{.RestartCount}}",
    "{{.Created}}",
    "{{.State.StartedAt}}",
    "{{.State.FinishedAt}}",
    "{{.State.ExitCode}}",
    '{{index .Config.Labels "' + ENV_HASH_LABEL + '"}}',
    "{{.Config.Image}}",
))
_HEALTH_STATES = {"", "starting", "healthy", "unhealthy"}


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str  # without docker's leading "/"
    service: str  # label com.docker.compose.service ("" outside compose)
    project: str  # label com.docker.compose.project
    state: str  # created, running, restarting, exited, paused, dead, removing
    health: str  # "", starting, healthy, unhealthy
    restart_count: int
    created: str  # RFC 3339 as docker prints it, e.g. 2026-11-26T18:31:29.504857849Z
    started_at: str  # 0001-01-01T00:00:00Z when never started
    finished_at: str  # 0001-01-01T00:00:00Z when never stopped
    exit_code: int
    env_hash: str  # label org.comfyume.env-hash, "" if absent
    image: str  # as configured (.Config.Image), e.g. redis:7-alpine

    @property
    def ok(self) -> bool:
        """Running, and healthy when it has a healthcheck."""
        return self.state == "running" and self.health in ("", "healthy")

    @property
    def crash_looping(self) -> bool:
        return self.restart_count >= CRASH_LOOP_RESTARTS

    def describe(self) -> str:
        """'running, healthy', 'exited, 3 restarts', ... for a message."""
        health = f", {self.health}" if self.health else ""
        restarts = f", {self.restart_count} restarts" if self.restart_count else ""
        return f"{self.state}{health}{restarts}"


def service_ok(c: ContainerInfo | None) -> bool:
    return c is not None and c.ok


def describe(c: ContainerInfo | None) -> str:
    return "no container" if c is None else c.describe()


def by_service(containers: Sequence[ContainerInfo]) -> dict[str, ContainerInfo]:
    """Service name -> its container (the running one when a service has several)."""
    out: dict[str, ContainerInfo] = {}
    for c in containers:
        if c.service and (c.service not in out or c.state == "running"):
            out[c.service] = c
    return out


def containers_command(project: str) -> str:
    """One `INSPECT_FORMAT` line per container of the compose project; never the environment."""
    ids = shlex.join(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"])
    insp = shlex.join(["docker", "inspect", "--format", INSPECT_FORMAT])
    return f"ids=$({ids}) && {{ [ -z \"$ids\" ] || {insp} $ids; }}"


def published_port(project: str, service: str, port: int) -> str:
    """Where the running container of a compose service publishes `port`: the same answer as
    `docker compose port`, from the engine alone (no compose files to load: ~0.1 s less CPU)."""
    ps = shlex.join(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                     "--filter", f"label=com.docker.compose.service={service}"])
    return f"set -- $({ps}) && [ $# -gt 0 ] && docker port \"$1\" {int(port)}/tcp"


def _int_field(value: str, what: str, line: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"an integer {what} in a docker inspect line", line) from None


def parse_inspect(text: str) -> tuple[ContainerInfo, ...]:
    """Containers from `docker inspect --format "$INSPECT_FORMAT" ID...` (blank lines skipped)."""
    containers = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != len(INSPECT_FIELDS):
            raise ParseError(f"{len(INSPECT_FIELDS)} TAB-separated fields per line of docker inspect "
                             f"--format INSPECT_FORMAT (got {len(fields)})", line)
        row = dict(zip(INSPECT_FIELDS, fields))
        if row["health"] not in _HEALTH_STATES:
            raise ParseError("a health of '', starting, healthy or unhealthy in a docker inspect line", line)
        containers.append(ContainerInfo(
            id=row["id"], name=row["name"].lstrip("/"), service=row["service"], project=row["project"],
            state=row["state"], health=row["health"],
            restart_count=_int_field(row["restart_count"], "RestartCount", line),
            created=row["created"], started_at=row["started_at"], finished_at=row["finished_at"],
            exit_code=_int_field(row["exit_code"], "ExitCode", line),
            env_hash=row["env_hash"], image=row["image"]))
    return tuple(containers)


# --- what the host-state read learns from the engine ------------------------------------------

def _fill_engine(st, code: int, out: str) -> None:
    if code == 0 and out.strip():
        st.engine = out.strip()
    else:
        st.engine_error = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"


def _fill_runtimes(st, code: int, out: str) -> None:
    if code == 0:
        try:
            st.runtimes = tuple(sorted(json.loads(out or "{}")))
        except ValueError:
            pass


def _fill_nvidia_toolkit(st, code: int, out: str) -> None:
    st.nvidia_toolkit = code == 0


def _fill_containers(st, code: int, out: str) -> None:
    if code == 0 and st.engine:
        st.containers = parse_inspect(out)


ENGINE = Fact("engine", fixed(ENGINE_COMMAND), _fill_engine, absent=(1, "no answer"), preflight=True,
              fields=(field("engine", "str | None"), field("engine_error", str, "")))
RUNTIMES = Fact("runtimes", fixed(RUNTIMES_COMMAND), _fill_runtimes, preflight=True,
                fields=(field("runtimes", "tuple[str, ...]", ()),))
NVIDIA_TOOLKIT = Fact("nvidia_toolkit", fixed(NVIDIA_TOOLKIT_COMMAND), _fill_nvidia_toolkit, preflight=True,
                      fields=(field("nvidia_toolkit", bool, False),))
# After ENGINE: the containers are read only from an engine that answered.
CONTAINERS = Fact("containers", lambda place: containers_command(place.project), _fill_containers,
                  fields=(field("containers", "tuple[ContainerInfo, ...]", ()),))
