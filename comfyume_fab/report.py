"""Human-readable renderings of a status report and a start-all summary."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: rendering never runs an operation
    from .ops.start import StartSummary
    from .ops.status import StatusReport


def _mark(ok: bool, warning: bool = False) -> str:
    return "FAIL" if not ok else ("warn" if warning else "ok")


def status_text(rep: StatusReport) -> str:
    d = rep.data
    lines = [f"comfyume status: {'HEALTHY' if d['ok'] else 'NOT HEALTHY'}   mode {d['mode']}   "
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
        img = h.get("images")
        if img:  # built from the team's repository
            head = (img.get("head") or "?")[:12]
            dep_c = (img.get("deployed_commit") or "none")[:12]
            note = "; the branch has commits not deployed" if img.get("undeployed") else ""
            lines.append(f"  branch {img['branch']} at {head} (last fetch), deployed {dep_c}{note}")
        width = max([len(s["service"]) for s in h["services"]] + [7])
        lines.append(f"  {'SERVICE':<{width}}  {'STATE':<10} {'HEALTH':<10} RESTARTS  IMAGE")
        for s in h["services"]:
            flag = "" if s["ok"] else "   <-- " + ("CRASH LOOP" if s.get("crash_loop") else "not ok")
            lines.append(f"  {s['service']:<{width}}  {s['state']:<10} {s['health']:<10} {s['restarts']:>8}  "
                         f"{s.get('image') or '-'}{flag}")
    lines.append("")
    lines.append("checks:")
    for c in rep.checks:
        lines.append(f"  [{_mark(c.ok, c.warning):>4}] {c.name}: {c.detail}")
    return "\n".join(lines)


def start_text(summary: StartSummary) -> str:
    plan = summary.plan
    lines = []
    for hp in plan.hosts:
        o = summary.outcomes[hp.name]
        what = "unchanged" if o.unchanged else f"(re)created or started {', '.join(o.changed)}"
        lines.append(f"  {hp.name}: {len(hp.services)} service(s) healthy, {what}")
    for c in summary.checks:
        lines.append(f"  [{_mark(c.ok, c.warning):>4}] {c.name}: {c.detail}")
    for w in summary.warnings:
        lines.append(f"  WARNING: {w}")
    head = ("start-all: everything was already running with this configuration; nothing changed"
            if not summary.changed else f"start-all: deployment up (mode {plan.mode}, config {plan.config_hash})")
    return "\n".join([head] + lines)
