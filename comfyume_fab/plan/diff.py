"""What a deploy WOULD change, service by service, from the plan and what a host runs now. Pure.

Each service's container carries its own fingerprint as a label (planner.service_fingerprints); a
service whose label differs from the plan's is recreated, and the reasons name the `.env` entries
whose values differ from the ones uploaded last time (a secret only as "changed", never its value).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from ..host import commands as cmd
from ..host.facts.docker import ContainerInfo, by_service
from ..inventory.secrets import Secret
from .planner import HostPlan

CREATE, RECREATE, START, REMOVE, UNCHANGED = "create", "recreate", "start", "remove", "unchanged"


@dataclasses.dataclass(frozen=True)
class ServiceChange:
    service: str
    action: str  # create | recreate | start | remove | unchanged
    reasons: tuple[str, ...] = ()

    def as_json(self) -> dict:
        return {"service": self.service, "action": self.action, "reasons": list(self.reasons)}


# What start-all did to a service, as its summary says it (plan/diff's actions are what it WOULD do).
DONE_ORDER = ("created", "recreated", "started", "removed", "unchanged")


def what_happened(services: Sequence[str], before: Sequence[ContainerInfo],
                  after: Sequence[ContainerInfo]) -> dict[str, str]:
    """service -> created | recreated | started | unchanged, in `services`' (the plan's) order, from
    the host's containers before and after a deploy stage: a new container where there was none is
    created, another container id recreated, the same one that was not running before started."""
    was, now = by_service(before), by_service(after)
    out = {}
    for svc in services:
        old, new = was.get(svc), now.get(svc)
        if new is None or (old is not None and old.id == new.id and old.ok):
            out[svc] = "unchanged"
        elif old is None:
            out[svc] = "created"
        elif old.id != new.id:
            out[svc] = "recreated"
        else:
            out[svc] = "started"
    return out


@dataclasses.dataclass(frozen=True)
class SecretChange:
    """A secret whose local value differs from the one a host's running services were given (its
    uploaded .env; compared in memory, never shown). `source`: where the local value comes from."""
    name: str
    host: str
    source: str
    services: tuple[str, ...]  # the planned services there that read it


def secret_changes(plan, states: Mapping) -> list[SecretChange]:
    """Every secret of the plan (made with each host's salt) whose value differs from the one in a
    host's uploaded .env (read with `env_section`, compared in memory) and that a running service
    there was started with: its container's fingerprint label differs from the plan's (a
    hand-edited .env whose services still run the local value is no such change). Per host in plan
    order; none for a host with no readable .env (never deployed)."""
    out = []
    for hp in plan.hosts:
        st = states.get(hp.name)
        code, text = st.extra.get(ENV_SECTION, (1, "")) if st is not None else (1, "")
        if code != 0 or not text.strip():
            continue
        old = parse_env_text(text)
        running = by_service(st.containers)
        for key, value in hp.env.items():
            if not isinstance(value, Secret) or key not in old or not value or old[key] == value.reveal():
                continue
            users = tuple(svc for svc in hp.services if key in hp.service_vars.get(svc, ())
                          and running.get(svc) is not None and running[svc].state == "running"
                          and running[svc].env_hash != hp.service_hashes.get(svc))
            if users:
                out.append(SecretChange(key, hp.name, getattr(value, "source", None) or "the local secrets", users))
    return out


def secret_sentence(change: SecretChange) -> str:
    """One sentence: which secret, where its local value comes from, and that the running services
    use another value (never either value)."""
    who = f"the running {', '.join(change.services)}" if change.services else "the running services"
    return (f"{change.name} from {change.source} differs from the value {who} on {change.host} use"
            f"{'s' if len(change.services) == 1 else ''} (deployed earlier): if that is a typo, fix it there; "
            f"start-all would deploy the local value")


def secret_refusal(change: SecretChange) -> str:
    """start-all's refusal to change the Redis password without --yes or a confirmation (exit 2)."""
    return (f"start-all: not changing {change.name}: the value from {change.source} differs from the one Redis on "
            f"{change.host} runs with, and changing it recreates Redis (queue manager and workers reconnect); "
            f"nothing was touched: fix {change.source} if that value is a typo, or rerun with --yes to change it")


def parse_env_text(text: str) -> dict[str, str]:
    """A .env as the planner writes it (KEY='value' lines) -> {KEY: value}. Held in memory only."""
    out = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _reasons(hp: HostPlan, service: str, old_env: Mapping[str, str] | None) -> tuple[str, ...]:
    if old_env is None:
        return ("its settings changed (the host has no readable .env to compare with)",)
    reasons = []
    for key in hp.service_vars.get(service, ()):
        new = hp.env.get(key)
        new_text = None if new is None else (new.reveal() if isinstance(new, Secret) else str(new))
        old = old_env.get(key)
        if old == new_text:
            continue
        if isinstance(new, Secret):
            reasons.append(f"{key} changed")
        else:
            reasons.append(f"{key} {old if old is not None else '(unset)'} -> {new_text if new_text is not None else '(unset)'}")
    return tuple(reasons) or ("its compose definition changed",)


def diff_host(hp: HostPlan, containers: Sequence[ContainerInfo], old_env: Mapping[str, str] | None,
              services: Sequence[str] | None = None) -> list[ServiceChange]:
    """Per planned service (in plan order) what `start-all` does to it, then the containers of
    services the plan no longer has (removed; a frontend's data/user_data/ folder is kept)."""
    current = by_service(containers)
    out = []
    for svc in services if services is not None else hp.services:
        c = current.get(svc)
        if c is None:
            out.append(ServiceChange(svc, CREATE))
        elif c.env_hash != hp.service_hashes.get(svc):
            out.append(ServiceChange(svc, RECREATE, _reasons(hp, svc, old_env)))
        elif not c.ok:
            out.append(ServiceChange(svc, START, (f"it is {c.describe()}",)))
        else:
            out.append(ServiceChange(svc, UNCHANGED))
    if services is None:
        for svc in sorted({c.service for c in containers if c.service and c.service not in hp.services}):
            note = ("its data/user_data/ folder is kept",) if svc.startswith("user") else ()
            out.append(ServiceChange(svc, REMOVE, note))
    return out


def changed(changes: Sequence[ServiceChange]) -> list[ServiceChange]:
    return [c for c in changes if c.action != UNCHANGED]


def summary_lines(diffs: Mapping[str, Sequence[ServiceChange]]) -> list[str]:
    """The text both `invoke diff` and `start-all` print: one line per change, per host."""
    lines = []
    for host, changes in diffs.items():
        todo = changed(changes)
        same = len(changes) - len(todo)
        if not todo:
            lines.append(f"{host}: nothing would change ({same} service(s) unchanged)")
            continue
        lines.append(f"{host}: {len(todo)} change(s), {same} service(s) unchanged")
        for c in todo:
            why = f" ({'; '.join(c.reasons)})" if c.reasons else ""
            lines.append(f"  {c.action} {c.service}{why}")
    return lines


ENV_SECTION = "envfile"


def env_section(workdir: str) -> tuple[str, str]:
    """The extra section of a host-state read that brings back the uploaded .env (kept in memory
    only: it holds the secrets) for `planned_changes`."""
    return ENV_SECTION, cmd.read_file(workdir, cmd.ENV_FILE)


def planned_changes(plan, states: Mapping) -> dict[str, list[ServiceChange]]:
    """Host -> what start-all would do to each service there, from host states read with
    `env_section` (unchanged services included)."""
    out = {}
    for hp in plan.hosts:
        st = states[hp.name]
        code, text = st.extra.get(ENV_SECTION, (1, ""))
        out[hp.name] = diff_host(hp, st.containers, parse_env_text(text) if code == 0 and text.strip() else None)
    return out
