"""What it takes to make the swarm match the inventory (`engine: swarm`). Pure: from each host's
own swarm state and the manager's node list to the steps still to run, or a refusal.

The app host is the manager; every worker host joins as a worker on its tailnet address; each node
carries the labels `comfyume.role` and `comfyume.host`. A node that is not a current inventory host's
and is Down, or that carries the label of a host no longer in the inventory, is removed (an
ephemeral GPU host's node stays `Down` in `docker node ls` until someone does: moby#46382). A host
already in another swarm is refused, never made to leave. Run again after each round of steps
until none is left: with everything in place there is none, so a rerun changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import ConfigError
from ..host.facts.swarm import HOST_LABEL, ROLE_LABEL, Node, SwarmInfo
from ..inventory.model import Inventory

INIT, JOIN, LABEL, REMOVE = "init", "join", "label", "remove"
BROKEN = ("pending", "error", "locked")


@dataclass(frozen=True)
class Step:
    kind: str  # init | join | label | remove
    host: str | None = None  # the inventory host it concerns (init, join, label)
    node_id: str | None = None  # label, remove
    role: str | None = None  # label
    force: bool = False  # remove a node that is not Down
    why: str = ""  # what the run says about it

    def sentence(self) -> str:
        return self.why


def _role(inv: Inventory, name: str) -> str:
    return "app" if inv.host(name).is_app else "worker"


def _refuse_broken(inv: Inventory, name: str, info: SwarmInfo) -> None:
    said = f" ({info.error})" if info.error else ""
    raise ConfigError(f"{inv.path}: {name}'s Docker engine is in swarm state '{info.state}'{said}: run "
                      f"`docker swarm leave --force` on {name} and rerun start-all, or fix its swarm first")


def cluster_steps(inv: Inventory, infos: Mapping[str, SwarmInfo], nodes: Sequence[Node]) -> list[Step]:
    """The steps left, in order (init alone first; then joins; then labels and removals). Raises
    ConfigError (nothing touched) for a host that is in another swarm or whose swarm is broken."""
    app = inv.app_host
    ai = infos[app.name]
    if ai.state in BROKEN:
        _refuse_broken(inv, app.name, ai)
    if ai.active and not ai.manager:
        where = f" (its managers: {', '.join(ai.managers)})" if ai.managers else ""
        raise ConfigError(f"{inv.path}: {app.name}, the app host, is already a worker of another Docker Swarm{where}: "
                          f"run `docker swarm leave` on {app.name} if it should manage this deployment's swarm, or "
                          f"choose another app host")
    if not ai.active:
        return [Step(INIT, app.name, why=f"{app.name}: docker swarm init on {app.tailscale_ip} "
                                          f"(advertise and data-path address: the tailnet's)")]
    ours = {n.id: n for n in nodes}
    steps: list[Step] = []
    for host in inv.hosts:
        if host is app:
            continue
        info = infos[host.name]
        if info.state in BROKEN:
            _refuse_broken(inv, host.name, info)
        if info.active and info.node_id not in ours:
            where = f", its managers at {', '.join(info.managers)}" if info.managers else ""
            raise ConfigError(f"{inv.path}: {host.name} is already in another Docker Swarm (node {info.node_id[:12]}"
                              f"{where}): run `docker swarm leave --force` on {host.name} to let it join this "
                              f"deployment's swarm, or remove it from {inv.path}")
        if not info.active:
            steps.append(Step(JOIN, host.name, why=f"{host.name}: joining the swarm as a worker on "
                                                   f"{host.tailscale_ip}"))
    current = {infos[h.name].node_id: h.name for h in inv.hosts if infos[h.name].active}
    names = {h.name for h in inv.hosts}
    for node in nodes:
        name = current.get(node.id)
        if name is not None:
            role = _role(inv, name)
            if node.labels.get(ROLE_LABEL) != role or node.labels.get(HOST_LABEL) != name:
                steps.append(Step(LABEL, name, node.id, role, why=f"{name}: labelling its node "
                                                                  f"{ROLE_LABEL}={role}, {HOST_LABEL}={name}"))
            continue
        if node.id == ai.node_id:
            continue  # the manager itself
        labelled = node.labels.get(HOST_LABEL)
        if labelled is not None and labelled not in names:
            steps.append(Step(REMOVE, labelled, node.id, force=node.state != "down",
                              why=f"removing node {node.id[:12]} of {labelled}, no longer in {inv.path}"))
        elif node.state == "down":
            was = f" (was {labelled})" if labelled else ""
            steps.append(Step(REMOVE, labelled, node.id,
                              why=f"removing node {node.id[:12]}{was}: Down, and no host of {inv.path} is it now"))
    return steps
