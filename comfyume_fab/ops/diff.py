"""`invoke diff`: what `start-all` would change, per host and service, read from the hosts without
touching them (one SSH connection and one read per host; the uploaded .env is compared in memory,
a secret only as "changed")."""
from __future__ import annotations

from ..host import commands as cmd
from ..host import state as hoststate
from ..host.session import Session, gather
from ..inventory.model import Inventory
from ..plan.diff import ServiceChange, diff_host, parse_env_text
from ..plan.planner import make_plan


def diff(inv: Inventory) -> dict[str, list[ServiceChange]]:
    """Host -> the change start-all would make to each service there (unchanged ones included)."""
    plan = make_plan(inv)
    hosts = [hp.host for hp in plan.hosts]
    with Session(inv, hosts) as s:
        s.connect()
        s.require_all()
        states = gather(lambda h: hoststate.read(s[h.name], inv.project, h.workdir, preflight=("engine",),
                                                 extra=[("envfile", cmd.read_file(h.workdir, cmd.ENV_FILE))]),
                        hosts)
    out = {}
    for hp in plan.hosts:
        st = states[hp.name]
        code, text = st.extra.get("envfile", (1, ""))
        out[hp.name] = diff_host(hp, st.containers, parse_env_text(text) if code == 0 and text.strip() else None)
    return out
