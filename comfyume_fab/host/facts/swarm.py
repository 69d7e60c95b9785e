"""Docker Swarm as a host shows it: its own swarm state (`docker info`), and on the manager the
nodes, the stack's services and its tasks; the images' entrypoints (for the secrets shim) and which
images a host lacks. Commands and pure parsers side by side; `ops.swarm` runs them.

Lab hosts share one hostname (network namespaces on one machine), so nodes and tasks are matched by
node ID, never by hostname.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import ParseError

INFO_COMMAND = "docker info --format '{{json .Swarm}}'"
# every node, whole (labels, role, availability, state, address, generic resources): one JSON per line
NODES_COMMAND = "docker node ls -q | xargs -r docker node inspect --format '{{json .}}'"
ROLE_LABEL, HOST_LABEL = "comfyume.role", "comfyume.host"


@dataclass(frozen=True)
class SwarmInfo:
    """This engine's own view: inactive | pending | active | error | locked, its node ID, whether it
    is a manager, the cluster's ID (managers only) and the managers it knows."""
    state: str
    node_id: str = ""
    node_addr: str = ""
    manager: bool = False
    cluster_id: str = ""
    managers: tuple[str, ...] = ()  # addresses of the managers it knows (host:port)
    error: str = ""

    @property
    def active(self) -> bool:
        return self.state == "active"


def parse_info(text: str) -> SwarmInfo:
    """`docker info --format '{{json .Swarm}}'` -> SwarmInfo."""
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or "LocalNodeState" not in data:
        raise ParseError("the JSON of `docker info`'s Swarm section with LocalNodeState", text)
    cluster = data.get("Cluster") or {}
    return SwarmInfo(state=str(data.get("LocalNodeState") or ""), node_id=str(data.get("NodeID") or ""),
                     node_addr=str(data.get("NodeAddr") or ""), manager=bool(data.get("ControlAvailable")),
                     cluster_id=str(cluster.get("ID") or ""),
                     managers=tuple(str(m.get("Addr")) for m in (data.get("RemoteManagers") or []) if m.get("Addr")),
                     error=str(data.get("Error") or ""))


@dataclass(frozen=True)
class Node:
    """One node of the swarm as the manager lists it."""
    id: str
    role: str  # manager | worker
    availability: str  # active | pause | drain
    state: str  # ready | down | unknown | disconnected
    addr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()  # the NVIDIA-GPU generic resources it advertises (UUIDs, or "N" when counted)

    @property
    def host(self) -> str | None:
        """The inventory host this tool labelled it as."""
        return self.labels.get(HOST_LABEL)


def _gpus(resources: Sequence[dict]) -> tuple[str, ...]:
    out = []
    for res in resources or ():
        named = res.get("NamedResourceSpec") or {}
        discrete = res.get("DiscreteResourceSpec") or {}
        if named.get("Kind") == "NVIDIA-GPU":
            out.append(str(named.get("Value")))
        elif discrete.get("Kind") == "NVIDIA-GPU":
            out += [str(discrete.get("Value"))]
    return tuple(out)


def parse_nodes(text: str) -> tuple[Node, ...]:
    """`NODES_COMMAND`'s output (one `docker node inspect` JSON object per line) -> nodes."""
    nodes = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise ParseError("one `docker node inspect` JSON object per line", line) from None
        spec, status = data.get("Spec") or {}, data.get("Status") or {}
        desc = data.get("Description") or {}
        nodes.append(Node(id=str(data.get("ID")), role=str(spec.get("Role") or ""),
                          availability=str(spec.get("Availability") or ""), state=str(status.get("State") or ""),
                          addr=str(status.get("Addr") or ""), labels=dict(spec.get("Labels") or {}),
                          gpus=_gpus((desc.get("Resources") or {}).get("GenericResources") or ())))
    return tuple(nodes)


def services_command(stack: str) -> str:
    return f"docker stack services {shlex.quote(stack)} --format '{{{{json .}}}}'"


@dataclass(frozen=True)
class Service:
    id: str
    name: str  # the stack's name for it: STACK_service
    running: int
    wanted: int
    image: str
    ports: str


def parse_services(text: str) -> tuple[Service, ...]:
    """`docker stack services STACK --format '{{json .}}'` -> services (Replicas "2/2")."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue  # "Nothing found in stack: ..." when it does not exist
        data = json.loads(line)
        running, _, wanted = str(data.get("Replicas", "0/0")).partition("/")
        wanted = wanted.split()[0] if wanted else "0"
        out.append(Service(str(data.get("ID")), str(data.get("Name")), int(running or 0), int(wanted or 0),
                           str(data.get("Image", "")), str(data.get("Ports", ""))))
    return tuple(out)


def tasks_command(stack: str) -> str:
    """Every task of the stack, whole (node ID, slot, state, error), one JSON object per line."""
    return (f"docker stack ps -q --no-trunc {shlex.quote(stack)} 2>/dev/null | "
            f"xargs -r docker inspect --type task --format '{{{{json .}}}}'")


@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    slot: int
    node_id: str
    state: str  # new | pending | assigned | preparing | starting | running | complete | failed | shutdown | rejected ...
    desired: str  # running | shutdown ...
    error: str
    timestamp: str


def parse_tasks(text: str) -> tuple[Task, ...]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        status = data.get("Status") or {}
        out.append(Task(id=str(data.get("ID")), service_id=str(data.get("ServiceID")), slot=int(data.get("Slot") or 0),
                        node_id=str(data.get("NodeID") or ""), state=str(status.get("State") or ""),
                        desired=str(data.get("DesiredState") or ""), error=str(status.get("Err") or ""),
                        timestamp=str(status.get("Timestamp") or "")))
    return tuple(out)


IMAGE_FORMAT = "{{json .Config.Entrypoint}}\t{{json .Config.Cmd}}"
MISSING = "@@missing"


def images_command(refs: Sequence[str]) -> str:
    """Per image: its reference, then its entrypoint and command (JSON), or MISSING when the engine
    lacks it (never pulled)."""
    # (`docker image inspect` prints an empty line even for an image it does not have: hence the variable)
    parts = [f"if cfab_i=$(docker image inspect --format {shlex.quote(IMAGE_FORMAT)} {shlex.quote(r)} 2>/dev/null); "
             f"then printf '%s\\t%s\\n' {shlex.quote(r)} \"$cfab_i\"; else printf '%s\\t%s\\n' {shlex.quote(r)} {MISSING}; fi"
             for r in refs]
    return "; ".join(parts) or "true"


def parse_images(text: str) -> dict[str, tuple[str, ...] | None]:
    """ref -> the argv it runs by default (entrypoint + command), or None when the host lacks it."""
    out: dict[str, tuple[str, ...] | None] = {}
    for line in text.splitlines():
        ref, _, rest = line.partition("\t")
        if not ref:
            continue
        if rest.strip() == MISSING:
            out[ref] = None
            continue
        entry, _, cmd = rest.partition("\t")
        try:
            argv = list(json.loads(entry) or []) + list(json.loads(cmd) or [])
        except ValueError:
            raise ParseError("an image's entrypoint and command as JSON", line) from None
        out[ref] = tuple(str(a) for a in argv)
    return out
