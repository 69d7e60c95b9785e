"""What start-all, stop-verda and status print with `engine: swarm` (ops/swarm.py's results)."""
from __future__ import annotations

import json
from typing import Any

from .style import paint as _paint


def start_text(res) -> str:
    lines = ["start-all (engine: swarm): " + ("deployed" if res.deployed else "nothing to do, the stack runs as planned")]
    for step in res.steps:
        lines.append(f"  swarm: {step}")
    for service, hosts in sorted(res.tasks.items()):
        lines.append(f"  {service}: {len(hosts)} task(s) running on {', '.join(sorted(hosts))}")
    for c in res.checks:
        lines.append(f"  {c.name}: {c.detail}")
    if res.warnings:
        lines.append(f"{len(res.warnings)} warning(s)")
    return "\n".join(lines)


def stop_text(out: dict[str, Any]) -> str:
    return (f"stop-verda (engine: swarm): {out['stopped']} scaled to 0 in {out['took_s']} s; the app host's "
            f"{out['app_tasks']} task(s) " + ("untouched" if out["app_untouched"] else "CHANGED"))


def status_text(data: dict[str, Any], checks, code, colour: bool = False) -> str:
    head = ("HEALTHY" if data["ok"] else "STOPPED ON PURPOSE" if int(code) == 6 else "NOT HEALTHY")
    lines = [f"comfyume status: {_paint(head, 'ok' if data['ok'] else 'warn' if int(code) == 6 else 'FAIL', colour)}"
             f"   mode {data['mode']}   engine swarm   local config {data['config_hash']}"]
    sw = data["swarm"]
    lines.append("")
    lines.append(f"nodes (manager {sw['manager']}):")
    for n in sw["nodes"]:
        gpus = f"GPUs {', '.join(n['gpus'])}" if n["gpus"] else "no GPU advertised"
        lines.append(f"  {n['host'] or n['id']:<12} {n['role'] or '-':<7} {n['state']:<8} {n['availability']:<7} "
                     f"{n['addr']:<15} {gpus}")
    lines.append("services:")
    for sv in sw["services"]:
        lines.append(f"  {sv['name']:<28} {sv['running']}/{sv['wanted']}  {sv['ports']}")
    lines.append("tasks (desired running):")
    for t in sw["tasks"]:
        if t["desired"] == "running":
            err = f"  {t['error']}" if t["error"] else ""
            lines.append(f"  {t['service']}.{t['slot']:<3} on {t['host'] or t['node']:<12} {t['state']}{err}")
    for line in sw["moved"]:
        lines.append(f"rescheduled: {line}")
    for name, h in data["hosts"].items():
        if not h["reachable"]:
            lines.append(f"{name}: {_paint('UNREACHABLE', 'FAIL', colour)}  {h['error']}")
    lines.append("")
    for c in sorted(checks, key=lambda c: c.ok):
        mark = "ok  " if c.ok and not c.warning else "warn" if c.ok else "FAIL"
        lines.append(f"  {mark} {c.name}: {c.detail}")
    return "\n".join(lines)


def status_json(data: dict[str, Any], checks) -> str:
    return json.dumps({**data, "checks": [c.as_json() for c in checks]}, indent=2)
