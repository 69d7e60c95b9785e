"""`invoke switch-gpu TIER`: make another serverless tier the active one, safely.

1. the new tier's endpoint is proved FROM THE APP HOST (the key, a fresh graph executed:
   checks/serverless.py); a tier that does not answer is refused unless `force`;
2. under the deploy lock, the plan with the new `serverless.active` is deployed to the queue
   manager ALONE (only its fingerprint reads the tier variables, and only it is brought up; Redis,
   admin and every frontend keep their containers);
3. the queue manager's own /health must report the new tier's active_gpu, else the previous tier
   is deployed again (rolled back) and the failure named;
4. hosts.yaml's `serverless.active:` line is updated, so the next start-all and status agree.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from typing import Callable

from ..checks.serverless import probe_endpoint, qm_health
from ..errors import UnhealthyError
from ..host import state as hoststate
from ..host.facts import salt
from ..host.session import Session
from ..inventory.model import Inventory
from ..plan.planner import make_plan
from .audit import local_revision
from .lock import DeployLock
from .serverless import check_tier, price_text, tier_of_gpu
from .start import HostOutcome, _deploy_stage, _record

SERVICE = "queue-manager"


def with_active(inv: Inventory, tier: str) -> Inventory:
    return dataclasses.replace(inv, serverless=dataclasses.replace(inv.serverless, active=tier))


def switch_gpu(inv: Inventory, tier: str, say: Callable[[str], None], warn: Callable[[str], None],
               force: bool = False, wait_lock: float = 0.0) -> dict:
    """Switch the active tier; returns {"old", "new", "old_price", "new_price", "kept", "recreated", ...}."""
    check_tier(inv, tier)
    new_inv = with_active(inv, tier)
    new = new_inv.serverless.active_tier
    app = inv.app_host
    key = inv.secrets.get("SERVERLESS_API_KEY")
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        remote = s[app.name]
        before, _ = qm_health(remote, inv.ports.queue_manager, inv.timeouts.redis + 5)
        old_name = tier_of_gpu((before or {}).get("active_gpu")) or inv.serverless.active or "default"
        old = inv.serverless.tier(old_name)
        say(f"{app.name}: probing tier {tier} ({new_inv.serverless.active_url}) from {app.name}")
        key_check, inference = probe_endpoint(remote, tier, new_inv.serverless.active_url or "",
                                              key.reveal() if key else None, inv.timeouts.probe,
                                              inv.probe.workflow_graph)
        if not key_check.ok:
            warn(key_check.detail)
        if not inference.ok and not force:
            raise UnhealthyError(f"refusing to switch to tier {tier}: {inference.detail}", host=app.name,
                                 step="probe new tier", hint="fix that deployment (or the key) and retry, or "
                                 "add --force to switch anyway")
        if not inference.ok:
            warn(f"switching anyway (--force): {inference.detail}")
        else:
            say(f"{app.name}: tier {tier} answers: {inference.detail}")
        state = hoststate.read(remote, inv.project, app.workdir)
        ids_before = {c.service: c.id for c in state.containers}
        revision = local_revision()
        with DeployLock(remote, app.workdir, "switch-gpu", revision, wait=wait_lock, say=say,
                        stale_after=inv.timeouts.lock_wait):
            # the app host's own salt (read with its state): the hashes it holds stay comparable
            plan = make_plan(new_inv, salts={app.name: state.salt or salt.new_salt()})
            _deploy_stage(new_inv, s, plan.app, (SERVICE,), state, HostOutcome(app.name), say)
            reported = _await_gpu(remote, inv, new_inv.serverless.expected_gpu)
            if reported != new_inv.serverless.expected_gpu:
                say(f"{app.name}: the queue manager reports {reported}, not {new_inv.serverless.expected_gpu}: "
                    f"rolling back to {old_name}")
                back_inv = with_active(inv, old_name) if old is not None or old_name == "default" else inv
                back_state = hoststate.read(remote, inv.project, app.workdir)
                back = make_plan(back_inv, salts={app.name: back_state.salt or salt.new_salt()})
                _deploy_stage(back_inv, s, back.app, (SERVICE,), back_state, HostOutcome(app.name), say)
                raise UnhealthyError(f"after the switch to {tier} the queue manager's /health reported active_gpu "
                                     f"{reported}, not {new_inv.serverless.expected_gpu}; rolled back to {old_name}",
                                     host=app.name, step="verify switch",
                                     hint="check the queue manager's image reads SERVERLESS_ACTIVE and "
                                          "SERVERLESS_ENDPOINT_<TIER> (invoke logs --service queue-manager)")
            after = {c.service: c.id for c in hoststate.read_containers(remote, inv.project, step="read containers")}
            _record(s, plan.app, plan, revision, "switch-gpu", "changed")
    moved = sorted(svc for svc, cid in ids_before.items() if svc != SERVICE and after.get(svc) != cid)
    if moved:
        warn(f"{', '.join(moved)} were recreated too (their settings differed from hosts.yaml)")
    saved = save_active(inv.path, inv, tier)
    return {"old": old_name, "new": tier, "old_price": price_text(inv, old), "new_price": price_text(inv, new),
            "old_gpu": (old.gpu_label if old else None), "new_gpu": new.gpu_label,
            "recreated": [SERVICE] + moved, "kept": sorted(set(ids_before) - {SERVICE} - set(moved)),
            "reported": reported, "saved": saved, "probe": inference.data}


def _await_gpu(remote, inv: Inventory, expected: str) -> str | None:
    """The active_gpu /health reports once it answers (it was just recreated and waited healthy)."""
    deadline = time.monotonic() + max(10.0, inv.timeouts.redis * 3)
    reported = None
    while time.monotonic() < deadline:
        body, _ = qm_health(remote, inv.ports.queue_manager, inv.timeouts.redis + 5)
        reported = (body or {}).get("active_gpu")
        if reported == expected:
            return reported
        time.sleep(0.5)
    return reported


ACTIVE_LINE = re.compile(r"^(\s*active:\s*)(['\"]?)([A-Za-z0-9_-]+)\2(\s*(#.*)?)$")


def save_active(path: str, inv: Inventory, tier: str) -> str:
    """Rewrite hosts.yaml's `serverless.active:` line in place (comments kept); a sentence saying
    what was done, or what to do when the line cannot be found safely."""
    line_no = inv.lines.get(("serverless", "active"))
    todo = f"set serverless.active: {tier} in {path}, or the next start-all switches back"
    if not line_no:
        return f"hosts.yaml has no serverless.active line: {todo}"
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        m = ACTIVE_LINE.match(lines[line_no - 1])
        if not m or m.group(3) != inv.serverless.active:
            return f"line {line_no} of {path} is not the expected `active: {inv.serverless.active}`: {todo}"
        lines[line_no - 1] = f"{m.group(1)}{m.group(2)}{tier}{m.group(2)}{m.group(4)}"
        tmp = f"{path}.cfab-tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        return f"could not update {path} ({exc.strerror or exc}): {todo}"
    return f"{path}:{line_no} now reads active: {tier}"
