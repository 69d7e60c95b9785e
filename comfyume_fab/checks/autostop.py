"""Autostop as `status` reports it: a provider host's autostop state (written on the app host by the
program, host/agents/autostop.py) judged now, in one sentence and as the `autostop` block of the
host in --json. Never a failure: an autostop in error or not running is a warning (the GPU keeps
billing; max_lifetime is then the only limit).

  watching, idle since 13:05, deletes at 13:35 (idle 30m)
  watching, busy (1 running, 2 pending) at 13:20; deletes 30m after the queue empties (max lifetime at 01:00)
  deleted the instance at 13:36 (idle 30m)
  error since 13:10: the queue manager did not answer GET /health: ...; deletes at 13:35 (idle 30m)
  not running? its last check was at 12:50 (every 1m)
  not installed (start-all installs it)
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..host.agents.autostop import parse_iso, span
from .result import CheckResult

STALE_ROUNDS = 3  # a state not written for 3 rounds (+30 s): the program is not running


def clock(t: float | None, now: float) -> str:
    """HH:MM in this machine's local time; with the date when it is not within a day of now."""
    if t is None:
        return "?"
    when = datetime.fromtimestamp(t)
    return when.strftime("%H:%M") if abs(t - now) < 20 * 3600 else when.strftime("%Y-%m-%d %H:%M")


def view(state: dict | None, now: float | None = None, instance_id: str | None = None) -> dict[str, Any]:
    """The `autostop` block of a host in status --json, with its `text` (the sentence)."""
    now = time.time() if now is None else now
    if not state:
        return {"state": "not-installed", "text": "not installed (start-all installs it)", "stale": False,
                "instance_id": None, "last_busy": None, "fires_at": None, "fires_for": None, "idle_s": None,
                "max_lifetime_s": None, "deleted_at": None, "reason": None, "last_check": None}
    st = str(state.get("state"))
    last_check, last_busy = parse_iso(state.get("last_check")), parse_iso(state.get("last_busy"))
    fires_at = parse_iso(state.get("fires_at"))
    every = float(state.get("check_every_s") or 60)
    stale = st != "deleted" and (last_check is None or now - last_check > STALE_ROUNDS * every + 30)
    idle = f"idle {span(state.get('idle_s'))}"
    why = "max lifetime " + span(state.get("max_lifetime_s")) if state.get("fires_for") == "max_lifetime" else idle
    when = f"deletes at {clock(fires_at, now)} ({why})"
    other = instance_id is not None and state.get("instance_id") != instance_id
    if st == "deleted":
        text = f"deleted the instance at {clock(parse_iso(state.get('deleted_at')), now)} ({why})"
    elif stale:
        text = (f"not running? its last check was at {clock(last_check, now)} (every {span(every)}); "
                "the instance is not watched")
    elif st == "error":
        text = f"error since {clock(parse_iso(state.get('error_since')), now)}: {state.get('reason')}; {when}"
    elif state.get("reason") == "busy":
        lifetime = parse_iso(state.get("created_at"))
        limit = (f" (max lifetime at {clock(lifetime + int(state['max_lifetime_s']), now)})"
                 if lifetime is not None and state.get("max_lifetime_s") else "")
        text = (f"watching, busy ({state.get('running') or 0} running, {state.get('pending') or 0} pending) at "
                f"{clock(last_busy, now)}; deletes {span(state.get('idle_s'))} after the queue empties{limit}")
    else:
        text = f"watching, idle since {clock(last_busy, now)}, {when}"
    if other:
        text += f" (an earlier instance {state.get('instance_id')}, not the recorded {instance_id})"
    return {"state": "stale" if stale else st, "text": text, "stale": stale,
            "instance_id": state.get("instance_id"), "last_busy": state.get("last_busy"),
            "fires_at": state.get("fires_at"), "fires_for": state.get("fires_for"),
            "idle_s": state.get("idle_s"), "max_lifetime_s": state.get("max_lifetime_s"),
            "deleted_at": state.get("deleted_at"), "reason": state.get("reason") or None,
            "last_check": state.get("last_check")}


def check(host: str, block: dict) -> CheckResult:
    """`autostop-HOST`: ok while watching or after it deleted the instance; a warning otherwise."""
    fine = block["state"] in ("watching", "deleted")
    return CheckResult(f"autostop-{host}", True, block["text"], host=host, warning=not fine,
                       data={"autostop_state": block["state"]})
