"""`invoke diff`: what `start-all` would change, per host and service, read from the hosts without
touching them (one SSH connection and one read per host; the uploaded .env is compared in memory,
a secret only as "changed")."""
from __future__ import annotations

from ..host import state as hoststate
from ..host.session import Session, gather
from ..inventory.model import Inventory
from ..plan.diff import ServiceChange, env_section, planned_changes
from ..plan.planner import make_plan


def diff(inv: Inventory) -> dict[str, list[ServiceChange]]:
    """Host -> the change start-all would make to each service there (unchanged ones included)."""
    plan = make_plan(inv)
    hosts = [hp.host for hp in plan.hosts]
    with Session(inv, hosts) as s:
        s.connect()
        s.require_all()
        states = gather(lambda h: hoststate.read(s[h.name], inv.project, h.workdir, preflight=("engine",),
                                                 extra=[env_section(h.workdir)]),
                        hosts)
    return planned_changes(plan, states)
