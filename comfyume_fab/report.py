"""Human-readable renderings of a status report and a start-all summary."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import clean

if TYPE_CHECKING:  # a type only: rendering never runs an operation
    from .ops.start import StartSummary
    from .ops.status import StatusReport


def _mark(ok: bool, warning: bool = False) -> str:
    return "FAIL" if not ok else ("warn" if warning else "ok")


def status_text(rep: StatusReport) -> str:
    d = rep.data
    verdict = "HEALTHY" if d["ok"] else ("STOPPED ON PURPOSE" if int(rep.code) == 6 else "NOT HEALTHY")
    lines = [f"comfyume status: {verdict}   mode {d['mode']}   "
             f"local config {d['config_hash']} rev {d['revision']}"]
    for name, h in d["hosts"].items():
        lines.append("")
        if not h.get("reachable"):
            lines.append(f"{name}: UNREACHABLE  {h.get('error', '')}")
            continue
        dep = h.get("deployed", {})
        sync = "in sync" if dep.get("in_sync") else f"deployed {dep.get('config_hash') or 'never'}"
        lines.append(f"{name} ({', '.join(h['roles'])})  ssh {h['ssh_ms']:.0f} ms  engine {h['engine'] or 'DOWN'}  "
                     f"compose {h['compose'] or 'MISSING'}  config {sync}  rev {dep.get('revision') or '-'}")
        if h.get("gpu", {}).get("gpus"):
            for g in h["gpu"]["gpus"]:
                lines.append(f"  GPU {g['name']}  {g['memory_used_mib']}/{g['memory_total_mib']} MiB  "
                             f"{g['utilization_pct']}% busy")
        held = h.get("stopped_on_purpose")
        if held:
            lines.append(f"  stopped on purpose ({held['task']} by {held['by']} at {held['at']}): the instance is still "
                         f"running (on a cloud GPU, still billing); worker stopped for "
                         f"{_for(held.get('stopped_for_s'))}")
        width = max([len(s["service"]) for s in h["services"]] + [7])
        lines.append(f"  {'SERVICE':<{width}}  {'STATE':<10} {'HEALTH':<10} RESTARTS")
        for s in h["services"]:
            flag = "" if s["ok"] else "   <-- " + ("CRASH LOOP" if s.get("crash_loop") else
                                                   "stopped on purpose" if held and s["service"] == "worker" else "not ok")
            lines.append(f"  {s['service']:<{width}}  {s['state']:<10} {s['health']:<10} {s['restarts']:>8}{flag}")
    lines.append("")
    lines.append("checks:")
    for c in rep.checks:
        mark = "stop" if c.data.get("stopped_on_purpose") else _mark(c.ok, c.warning)
        lines.append(f"  [{mark:>4}] {c.name}: {c.detail}")
    return clean("\n".join(lines))  # names, states and details come from hosts


def _for(seconds) -> str:
    from .host.facts.stopped import for_how_long
    return for_how_long(seconds)


def start_text(summary: StartSummary) -> str:
    plan = summary.plan
    lines = []
    for hp in plan.hosts:
        o = summary.outcomes[hp.name]
        made = [svc for svc in o.changed if not svc.startswith("-")]
        gone = [svc[1:] for svc in o.changed if svc.startswith("-")]
        what = "unchanged" if o.unchanged else "; ".join(
            ([f"(re)created or started {', '.join(made)}"] if made else []) + ([f"removed {', '.join(gone)}"] if gone else []))
        lines.append(f"  {hp.name}: {len(hp.services)} service(s) healthy, {what}")
    for c in summary.checks:
        lines.append(f"  [{_mark(c.ok, c.warning):>4}] {c.name}: {c.detail}")
    for w in summary.warnings:
        lines.append(f"  WARNING: {w}")
    head = ("start-all: everything was already running with this configuration; nothing changed"
            if not summary.changed else f"start-all: deployment up (mode {plan.mode}, config {plan.config_hash})")
    return clean("\n".join([head] + lines))


def diff_text(diffs) -> str:
    """`invoke diff`: per host the services start-all would create, recreate (and why), start or
    remove; the same lines start-all prints before acting."""
    from .plan.diff import changed, summary_lines
    total = sum(len(changed(c)) for c in diffs.values())
    head = ("diff: nothing would change" if not total else
            f"diff: start-all would make {total} change(s)")
    return clean("\n".join([head] + [f"  {line}" for line in summary_lines(diffs)]))


def diff_json(diffs) -> str:
    import json
    from .plan.diff import changed
    return json.dumps({"changes": sum(len(changed(c)) for c in diffs.values()),
                       "hosts": {h: [c.as_json() for c in changes] for h, changes in diffs.items()}}, indent=2)
