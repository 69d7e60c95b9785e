"""What a host looks like right now, read in ONE round trip (a sectioned script of the facts'
commands) and parsed by the facts' pure parsers; and `read_containers`, the one way to read a
compose project's containers."""
from __future__ import annotations

import dataclasses
import json

from ..inventory.secrets import Secret
from . import commands as cmd
from .facts import ParseError, compose, docker, nvidia, tailscale
from .facts.compose import ComposeVersion
from .facts.docker import ContainerInfo
from .facts.nvidia import Gpu
from .facts.preflight import preflight_parts
from .ssh.remote import Remote


def read_containers(remote: Remote, project: str, step: str) -> tuple[ContainerInfo, ...]:
    """The compose project's containers on this host now (one `docker inspect`); () when the
    engine does not answer (the callers judge an absent service)."""
    res = remote.run(docker.containers_command(project), step=step)
    return docker.parse_inspect(res.stdout) if res.ok else ()


@dataclasses.dataclass
class HostState:
    name: str
    rtt_s: float
    engine: str | None = None
    engine_error: str = ""
    compose: ComposeVersion | None = None
    legacy_compose: str | None = None
    gpus: tuple[Gpu, ...] | None = None  # None: no usable nvidia-smi on the host
    gpu_error: str = ""
    runtimes: tuple[str, ...] = ()
    nvidia_toolkit: bool = False
    tailscale_ip: str | None = None
    containers: tuple[ContainerInfo, ...] = ()
    deployed: dict | None = None
    env_redis_password: Secret | None = dataclasses.field(default=None, repr=False)
    env_hash: str | None = None  # CFAB_ENV_HASH of the .env uploaded to the host
    service_hashes: dict = dataclasses.field(default_factory=dict)  # CFAB_HASH_<SERVICE> -> value, from .env
    extra: dict = dataclasses.field(default_factory=dict)  # raw (exit, output) of extra sections

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def read(remote: Remote, project: str, workdir: str, *, timeout: float | None = None,
         with_env_password: bool = False, extra: list[tuple[str, str]] = (),
         preflight: tuple[str, ...] | None = None) -> HostState:
    """`preflight`: the names of the preflight sections to run (default: all of them; `status`
    runs only engine, compose and nvidia)."""
    env_path = cmd.q(cmd.workdir_path(workdir, cmd.ENV_FILE))
    parts = [p for p in preflight_parts() if preflight is None or p[0] in preflight] + [
        ("containers", docker.containers_command(project)),
        ("deployed", cmd.read_file(workdir, cmd.DEPLOYED)),
        ("envhash", f"grep '^CFAB_' {env_path}"),
    ] + list(extra)
    if with_env_password:
        # Read into memory only (for the Redis check as the worker sees it); never printed.
        parts.append(("envpw", f"grep '^REDIS_PASSWORD=' {env_path}"))
    res = remote.run(cmd.sections(parts), timeout=timeout, step="read host state")
    return parse_state(remote.name, res.stdout, res.duration, [name for name, _ in extra])


def parse_state(name: str, stdout: str, rtt_s: float = 0.0, extra_names=()) -> HostState:
    """Pure: the sectioned script's output -> HostState (tested on output recorded on real hosts)."""
    sec = cmd.split_sections(stdout)
    st = HostState(name, rtt_s)
    code, out = sec.get("engine", (1, "no answer"))
    if code == 0 and out.strip():
        st.engine = out.strip()
    else:
        st.engine_error = out.strip().splitlines()[-1] if out.strip() else f"exit {code}"
    code, out = sec.get("compose", (1, ""))
    st.compose = compose.parse_compose_version(out) if code == 0 else None
    code, out = sec.get("legacy_compose", (1, ""))
    st.legacy_compose = out.strip() if code == 0 and out.strip() else None
    code, out = sec.get("nvidia", (127, ""))
    if code == 0:
        try:
            st.gpus = nvidia.parse_nvidia_smi_query(out)
        except ParseError as exc:
            st.gpu_error = str(exc)
    elif code != 127:
        st.gpu_error = out.strip()[-200:]
    code, out = sec.get("runtimes", (1, ""))
    if code == 0:
        try:
            st.runtimes = tuple(sorted(json.loads(out or "{}")))
        except ValueError:
            pass
    st.nvidia_toolkit = sec.get("nvidia_toolkit", (1, ""))[0] == 0
    code, out = sec.get("tailscale", (1, ""))
    st.tailscale_ip = tailscale.parse_tailscale_ip(out) if code == 0 else None
    code, out = sec.get("containers", (1, ""))
    if code == 0 and st.engine:
        st.containers = docker.parse_inspect(out)
    code, out = sec.get("deployed", (1, ""))
    if code == 0 and out.strip():
        try:
            st.deployed = json.loads(out)
        except ValueError:
            st.deployed = None
    code, out = sec.get("envpw", (1, ""))
    if code == 0 and "=" in out:
        st.env_redis_password = Secret(_env_value(out))
    code, out = sec.get("envhash", (1, ""))
    for line in out.splitlines() if code == 0 else ():
        if line.startswith("CFAB_ENV_HASH="):
            st.env_hash = _env_value(line)
        elif line.startswith("CFAB_HASH_") and "=" in line:
            st.service_hashes[line.split("=", 1)[0]] = _env_value(line)
    st.extra = {n: sec.get(n, (1, "")) for n in extra_names}
    return st


def _env_value(line: str) -> str:
    value = line.strip().split("=", 1)[1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value
