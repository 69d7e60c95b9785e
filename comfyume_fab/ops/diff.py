"""`invoke diff`: what `start-all` would change, per host and service, read from the hosts without
touching them (one SSH connection and one read per host; the uploaded .env is compared in memory,
a secret only as "changed")."""
from __future__ import annotations

from ..host import state as hoststate
from ..host.facts import salt
from ..host.session import Session, gather
from ..inventory import fingerprint
from ..inventory.model import Inventory
from ..plan.diff import SecretChange, ServiceChange, env_section, planned_changes, secret_changes
from ..plan.planner import make_plan


def diff(inv: Inventory, secrets: list[SecretChange] | None = None) -> dict[str, list[ServiceChange]]:
    """Host -> the change start-all would make to each service there (unchanged ones included);
    `secrets`, when given, gets each secret whose local value differs from the one running services
    use (which, on which host, from where: start-all would ask before a new Redis password)."""
    hosts = [hp.host for hp in make_plan(inv).hosts]
    with Session(inv, hosts) as s:
        s.connect()
        s.require_all()
        states = gather(lambda h: _read_state(inv, s, h), hosts)
    # Each host's hashes made with its salt, as start-all makes them (a host without one gets a new
    # one there, so what reads a secret is recreated: a new salt here says so too).
    plan = make_plan(inv, salts={n: st.salt or salt.new_salt() for n, st in states.items()})
    if secrets is not None:
        secrets.extend(secret_changes(plan, states))
    return planned_changes(plan, states)


def _read_state(inv: Inventory, s: Session, host) -> hoststate.HostState:
    st = hoststate.read(s[host.name], inv.project, host.workdir, preflight=("engine",),
                        extra=[env_section(host.workdir)])
    fingerprint.warm(inv.secrets, st.salt)
    return st
