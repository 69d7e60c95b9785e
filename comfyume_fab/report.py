"""Human-readable renderings of a status report and a start-all summary."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .errors import clean

if TYPE_CHECKING:  # a type only: rendering never runs an operation
    from .ops.start import StartSummary
    from .ops.status import StatusReport


def _mark(ok: bool, warning: bool = False) -> str:
    return "FAIL" if not ok else ("warn" if warning else "ok")


_FRONTEND = re.compile(r"user\d{3,}")
_COLOURS = {"ok": "32", "warn": "33", "FAIL": "31", "dim": "2", "bold": "1"}


def _paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{_COLOURS[style]}m{text}\x1b[0m" if colour else text


def age(started_at: str | None, now: datetime | None = None) -> str:
    """'3d', '5h', '12m', '40s' since an RFC 3339 time (docker's nanoseconds allowed); '-' if unknown."""
    if not started_at:
        return "-"
    try:
        t = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", started_at).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    secs = max(0, int(((now or datetime.now(timezone.utc)) - t).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def status_text(rep: StatusReport, colour: bool = False) -> str:
    """The status at a glance: one line per host, one per service, every frontend collapsed into
    one `users N/N healthy` line (only the failing ones expanded), then the checks, failures first."""
    d = rep.data
    head = (_paint("DEGRADED", "warn", colour) if d["ok"] and d.get("verdict") == "degraded" else
            _paint("HEALTHY", "ok", colour) if d["ok"] else
            _paint("STOPPED ON PURPOSE", "warn", colour) if int(rep.code) == 6 else _paint("NOT HEALTHY", "FAIL", colour))
    lines = [f"comfyume status: {head}   mode {d['mode']}   local config {d['config_hash']} rev {d['revision']}"]
    for name, h in d["hosts"].items():
        lines.append("")
        if not h.get("reachable"):
            lines.append(f"{_paint(name, 'bold', colour)}: {_paint('UNREACHABLE', 'FAIL', colour)}  {h.get('error', '')}")
            continue
        dep = h.get("deployed") or {}
        sync = "in sync" if dep.get("in_sync") else f"deployed {dep.get('config_hash') or 'never'}"
        lines.append(f"{_paint(name, 'bold', colour)} ({', '.join(h['roles'])})  ssh {h['ssh_ms']:.0f} ms  "
                     f"engine {h['engine'] or 'DOWN'}  compose {h['compose'] or 'MISSING'}  config {sync}  "
                     f"rev {dep.get('revision') or '-'}")
        gpus = (h.get("gpu") or {}).get("gpus") or []
        for g in gpus:
            lines.append(f"  GPU {g['name']}  {g['memory_used_mib']}/{g['memory_total_mib']} MiB  "
                         f"{g['utilization_pct']}% busy")
        img = h.get("images")
        if img:  # built from the team's repository
            head = (img.get("head") or "?")[:12]
            dep_c = (img.get("deployed_commit") or "none")[:12]
            note = "; the branch has commits not deployed" if img.get("undeployed") else ""
            lines.append(f"  branch {img['branch']} at {head} (last fetch), deployed {dep_c}{note}")
        held = h.get("stopped_on_purpose")
        if held:
            lines.append(_paint(f"  stopped on purpose ({held['task']} by {held['by']} at {held['at']}): the instance is "
                                f"still running (on a cloud GPU, still billing); worker stopped for "
                                f"{_for(held.get('stopped_for_s'))}", "warn", colour))
        services = h["services"]
        users = [s for s in services if _FRONTEND.fullmatch(s["service"])]
        rows = [s for s in services if s not in users]
        bad_users = [s for s in users if not s["ok"]]
        width = max([len(s["service"]) for s in rows + bad_users] + [7])
        lines.append(_paint(f"  {'SERVICE':<{width}}  {'STATE':<10} {'HEALTH':<10} {'RESTARTS':>8}  {'AGE':>4}  IMAGE",
                            "dim", colour))
        for s in rows:
            lines.append(_service_line(s, width, colour, held))
        if users:
            n_ok = len(users) - len(bad_users)
            images = sorted({s.get("image") or "-" for s in users})
            summary = f"  {'users':<{width}}  {n_ok}/{len(users)} healthy"
            summary += f"  ({users[0]['service']}..{users[-1]['service']}, {', '.join(images)})"
            lines.append(_paint(summary, "ok" if not bad_users else "FAIL", colour) if colour else summary)
            for s in bad_users:
                lines.append(_service_line(s, width, colour))
    lines.append("")
    lines.append("checks:")
    for c in sorted(rep.checks, key=lambda c: (c.ok, not c.warning)):
        mark = _mark(c.ok, c.warning)
        shown = "stop" if c.data.get("stopped_on_purpose") else mark
        lines.append(f"  [{_paint(f'{shown:>4}', 'warn' if shown == 'stop' else mark, colour)}] {c.name}: {c.detail}")
    # names, states and details come from hosts: escape their control characters, keep our colours
    return "\n".join(clean(line) if not colour else _clean_keeping_colour(line) for line in lines)


def _clean_keeping_colour(line: str) -> str:
    parts = re.split(r"(\x1b\[[0-9;]*m)", line)
    return "".join(p if p.startswith("\x1b[") and p.endswith("m") else clean(p) for p in parts)


def _for(seconds) -> str:
    from .host.facts.stopped import for_how_long
    return for_how_long(seconds)


def _service_line(s: dict, width: int, colour: bool, held=None) -> str:
    flag = "" if s["ok"] else "   <-- " + ("CRASH LOOP" if s.get("crash_loop") else
                                           "stopped on purpose" if held and s["service"] == "worker" else "not ok")
    line = (f"  {s['service']:<{width}}  {s['state']:<10} {s['health']:<10} {s['restarts']:>8}  "
            f"{age(s.get('started_at')):>4}  {s.get('image') or '-'}")
    return line + (_paint(flag, "FAIL", colour) if flag else "")


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
class StatusLine:
    """One progress line on stderr that rewrites itself while a task waits (connect, checks,
    probe) and is erased before the answer is printed; silent when stderr is not a terminal."""

    def __init__(self, stream=None):
        import sys
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, message: str) -> None:
        if self.live:
            self.stream.write(f"\r\x1b[K… {message}")
            self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def watch_screen(snap) -> object:
    """The `status --watch` screen for a Snapshot (ops/watch.py): a rich renderable. rich is
    imported here, so only the task that draws it pays for it."""
    import time

    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble(("comfyume status --watch", "bold"),
                         f"   every {snap.interval:g} s   {time.strftime('%H:%M:%S')}   q or Ctrl-C quits")
    hosts = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col in ("HOST", "READ", "SERVICES", "GPU", "PROBE"):
        hosts.add_column(col, no_wrap=col != "SERVICES")
    for h in snap.hosts:
        if not h.reachable:
            what = "connecting…" if h.connecting and not h.error else "UNREACHABLE"
            note = f"{what} {h.error}".strip()
            hosts.add_row(Text(h.name, "bold"), Text("-", "red"), Text(note, "red"), "", "")
            continue
        hosts.add_row(Text(h.name, "bold"), f"{h.rtt_ms:.0f} ms" if h.rtt_ms is not None else "-",
                      _services_text(h.services, Text), _gpu_text(h, Text), _probe_text(h.probe, Text))
    q = snap.queue
    if q:
        beats = ", ".join(f"{wid} {age} s ago" if age is not None else f"{wid} NO HEARTBEAT"
                          for wid, age in q["heartbeat_age_s"].items()) or "no workers"
        queue = Text.assemble(("queue ", "bold"), f"{q['depth']} pending  {q['running']} running  "
                              f"{q['completed_per_min']} completed/min   heartbeats: {beats}")
        if snap.queue_error:
            queue.append(f"   (stale: {snap.queue_error})", "yellow")
    elif snap.queue_error:
        queue = Text.assemble(("queue ", "bold"), (f"unavailable: {snap.queue_error}", "red"))
    else:
        queue = Text.assemble(("queue ", "bold"), "reading…")
    return Group(head, Text(""), hosts, Text(""), queue)


def _services_text(services, Text):
    users = [s for s in services if _FRONTEND.fullmatch(s["service"])]
    out = Text()
    for s in services:
        if s in users:
            continue
        out.append(f"{s['service']} ", "green" if s["ok"] else "red")
        if not s["ok"]:
            out.append(f"({s['state']}, {s['health']}) ", "red")
    if users:
        bad = [s for s in users if not s["ok"]]
        out.append(f"users {len(users) - len(bad)}/{len(users)} healthy", "green" if not bad else "red")
        for s in bad:
            out.append(f" {s['service']} ({s['state']}, {s['health']})", "red")
    return out


def _gpu_text(h, Text):
    if not h.gpus:
        return Text("no GPU", "dim")
    return Text("  ".join(f"{g['utilization_pct']}% {g['memory_used_mib']}/{g['memory_total_mib']} MiB"
                          for g in h.gpus))


def _probe_text(probe, Text):
    if probe is None:
        return Text("")
    if probe["ok"]:
        return Text(f"ok {probe['ms']} ms", "green")
    return Text(f"FAIL {probe['detail'][:60]}", "red")
