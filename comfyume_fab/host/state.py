"""What a host looks like right now, read in ONE round trip: the registered facts' commands run as
one sectioned script (`read`), each section parsed by its own fact (`parse_state`); and
`read_containers`, the one way to read a compose project's containers.

Each fact keeps its command, section name, parser and `HostState` fields in its own module
(`host.facts.Fact`); this module only assembles them: `FACTS` in the order they are run and
applied, and `HostState` from the fields they declare. Adding a fact to a subject's module and
naming it in `FACTS` is the whole change.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import commands as cmd
from .facts import Fact, Place, compose, deployed, docker, envfile, nvidia, salt, tailscale
from .facts.docker import ContainerInfo

if TYPE_CHECKING:
    from .ssh.remote import Remote

# Run (as sections) and applied in this order: a later fact may read what an earlier one filled.
FACTS: tuple[Fact, ...] = (
    docker.ENGINE, compose.VERSION, compose.LEGACY, nvidia.GPUS, docker.RUNTIMES, docker.NVIDIA_TOOLKIT,
    tailscale.IP, docker.CONTAINERS, deployed.RECORD, envfile.HASHES, envfile.REDIS_PASSWORD, salt.SALT,
)


def _has_gpu(self) -> bool:
    return bool(self.gpus)


HostState = dataclasses.make_dataclass(
    "HostState",
    [("name", str), ("rtt_s", float)] + [f for fact in FACTS for f in fact.fields] + [
        ("extra", dict, dataclasses.field(default_factory=dict))],  # raw (exit, output) of extra sections
    namespace={"has_gpu": property(_has_gpu),
               "__doc__": "A host's state as read now: `name`, `rtt_s` (the read's round trip), the "
                          "fields of every fact in `FACTS`, and `extra` (raw sections asked for)."})
HostState.__module__ = __name__


def preflight_parts() -> list[tuple[str, str]]:
    """(section name, command) for the engine, Compose, the GPU, the runtimes and Tailscale."""
    return [(f.section, f.command(Place("", ""))) for f in FACTS if f.preflight]


def read_containers(remote: Remote, project: str, step: str) -> tuple[ContainerInfo, ...]:
    """The compose project's containers on this host now (one `docker inspect`); () when the
    engine does not answer (the callers judge an absent service)."""
    res = remote.run(docker.containers_command(project), step=step)
    return docker.parse_inspect(res.stdout) if res.ok else ()


def read(remote: Remote, project: str, workdir: str, *, timeout: float | None = None,
         with_env_password: bool = False, extra: list[tuple[str, str]] = (),
         preflight: tuple[str, ...] | None = None) -> HostState:
    """`preflight`: the names of the preflight sections to run (default: all of them; `status`
    runs only engine, compose and nvidia). `extra`: (section, command) pairs whose raw exit code
    and output land in `HostState.extra`; `with_env_password`: the facts run only on request too."""
    place = Place(project, workdir)
    wanted = [f for f in FACTS if not f.on_request and (not f.preflight or preflight is None or f.section in preflight)]
    parts = [(f.section, f.command(place)) for f in wanted] + list(extra)
    if with_env_password:
        parts += [(f.section, f.command(place)) for f in FACTS if f.on_request]
    res = remote.run(cmd.sections(parts), timeout=timeout, step="read host state")
    return parse_state(remote.name, res.stdout, res.duration, [name for name, _ in extra])


def parse_state(name: str, stdout: str, rtt_s: float = 0.0, extra_names=()) -> HostState:
    """Pure: the sectioned script's output -> HostState (tested on output recorded on real hosts)."""
    sec = cmd.split_sections(stdout)
    st = HostState(name, rtt_s)
    for fact in FACTS:
        fact.fill(st, *sec.get(fact.section, fact.absent))
    st.extra = {n: sec.get(n, (1, "")) for n in extra_names}
    return st
