"""Human-readable renderings of a task's result: a status report, a start-all summary, a diff."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..errors import clean
from .style import clean_keeping_colour as _clean_keeping_colour
from .style import paint as _paint

if TYPE_CHECKING:  # a type only: rendering never runs an operation
    from ..ops.start import StartSummary
    from ..ops.status import StatusReport


def _mark(ok: bool, warning: bool = False) -> str:
    return "FAIL" if not ok else ("warn" if warning else "ok")


FRONTEND = re.compile(r"user\d{3,}")  # a frontend service: user001, user002, ...


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


def revision_text(revision: str) -> str:
    """This tool's revision as shown: a git revision, or (`installed-VERSION`, ops.audit) the
    installed package's version, marked as not a git checkout."""
    if revision.startswith("installed-"):
        return f"{revision[len('installed-'):]} (installed package, not a git checkout)"
    return revision


def status_text(rep: StatusReport, colour: bool = False) -> str:
    """The status at a glance: one line per host, one per service, every frontend collapsed into
    one `users N/N healthy` line (only the failing ones expanded), then the checks, failures first."""
    d = rep.data
    head = (_paint("DEGRADED", "warn", colour) if d["ok"] and d.get("verdict") == "degraded" else
            _paint("HEALTHY", "ok", colour) if d["ok"] else
            _paint("STOPPED ON PURPOSE", "warn", colour) if int(rep.code) == 6 else _paint("NOT HEALTHY", "FAIL", colour))
    lines = [f"comfyume status: {head}   mode {d['mode']}   local config {d['config_hash']} "
             f"rev {revision_text(d['revision'])}"]
    sv = d.get("serverless")
    if sv:
        price = (f"{sv['price_per_hour']:.2f} {sv['currency']}/h" if sv.get("price_per_hour") is not None
                 else "price unknown")
        lines.append(f"serverless tier {sv['active']}  GPU {sv.get('gpu') or sv['active_gpu_expected']}  {price}  "
                     f"queue manager reports {sv.get('active_gpu_reported') or '?'}")
        probe = sv.get("probe") or {}
        if probe.get("latency_ms") is not None:
            wait = probe.get("waiting_ms")
            lines.append(f"  inference ({probe.get('mode')}): {probe['latency_ms'] / 1000:.2f} s"
                         + (f", of which {wait / 1000:.2f} s waiting for a replica (cold start)"
                            if wait is not None else ""))
        sc = sv.get("scaling")
        if sc:
            lines.append(f"  deployment {sc['deployment']}: {sc['replicas']} replica(s), {sc['running']} running; "
                         f"min {sc['min_replicas']} max {sc['max_replicas']}")
    bill = d.get("bill")
    if bill:
        bal = (f"balance {bill['balance']:.2f} {bill['currency']}" if bill.get("balance") is not None
               else "balance unknown")
        runway = (f", {bill['runway_hours']:g} h of runway at {bill['burn_per_hour']:.2f} {bill['currency']}/h"
                  if bill.get("runway_hours") is not None else "")
        lines.append(f"rented: {bal}{runway}")
        for name, b in bill["hosts"].items():
            if b["state"] == "rented":
                lines.append(f"  {name}: {b['instance_type']} ({'spot' if b['spot'] else 'on demand'}) in "
                             f"{b['location']} at {b['price_per_hour']:.2f}/h, running {b['hours']:.2f} h, cost so far "
                             f"{b['cost_so_far']:.2f} {bill['currency']}")
    for name, h in d["hosts"].items():
        lines.append("")
        gone = h.get("deleted_on_purpose")
        if gone:
            what = (f"DELETED ON PURPOSE ({gone['how']} by {gone['by']} at {gone['at']}): not billing; start-all rents "
                    "a new instance" if gone.get("by") else "NOT RENTED: start-all rents an instance")
            lines.append(f"{_paint(name, 'bold', colour)} ({', '.join(h['roles'])})  {_paint(what, 'warn', colour)}")
            if h.get("autostop"):
                lines.append(f"  autostop: {h['autostop']['text']}")
            continue
        if not h.get("reachable"):
            lines.append(f"{_paint(name, 'bold', colour)}: {_paint('UNREACHABLE', 'FAIL', colour)}  {h.get('error', '')}")
            if h.get("autostop"):
                lines.append(f"  autostop: {h['autostop']['text']}")
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
        if h.get("autostop"):
            lines.append(f"  autostop: {h['autostop']['text']}")
        held = h.get("stopped_on_purpose")
        if held:
            lines.append(_paint(f"  stopped on purpose ({held['task']} by {held['by']} at {held['at']}): the instance is "
                                f"still running (on a cloud GPU, still billing); worker stopped for "
                                f"{_for(held.get('stopped_for_s'))}", "warn", colour))
        services = h["services"]
        users = [s for s in services if FRONTEND.fullmatch(s["service"])]
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


def _for(seconds) -> str:
    from ..host.facts.stopped import for_how_long
    return for_how_long(seconds)


def _service_line(s: dict, width: int, colour: bool, held=None) -> str:
    flag = "" if s["ok"] else "   <-- " + ("CRASH LOOP" if s.get("crash_loop") else
                                           "stopped on purpose" if held and s["service"] == "worker" else "not ok")
    line = (f"  {s['service']:<{width}}  {s['state']:<10} {s['health']:<10} {s['restarts']:>8}  "
            f"{age(s.get('started_at')):>4}  {s.get('image') or '-'}")
    return line + (_paint(flag, "FAIL", colour) if flag else "")


def start_text(summary: StartSummary, task: str = "start-all") -> str:
    """start-all's (or rollback's: `task`) summary: per host, in plan order, what happened to each
    service (created, recreated, started, removed, unchanged), the checks, and how many warnings
    were said (each was printed once, when it was found)."""
    from ..plan.diff import DONE_ORDER
    plan = summary.plan
    lines = []
    for hp in plan.hosts:
        o = summary.outcomes[hp.name]
        done = dict(o.done)
        for svc in o.changed:  # an outcome without `done` (changed only): said as it was
            if svc.startswith("-"):
                done.setdefault(svc[1:], "removed")
        for svc in hp.services:
            done.setdefault(svc, "unchanged")
        groups = [(what, [svc for svc in list(hp.services) + sorted(set(done) - set(hp.services))
                          if done.get(svc) == what]) for what in DONE_ORDER]
        what = "; ".join(f"{w} {', '.join(svcs)}" for w, svcs in groups if svcs)
        if o.unchanged and not any(v != "unchanged" for v in done.values()):
            what = "unchanged"
        lines.append(f"  {hp.name}: {len(hp.services)} service(s) healthy; {what}")
    for c in summary.checks:
        lines.append(f"  [{_mark(c.ok, c.warning):>4}] {c.name}: {c.detail}")
    warnings = list(dict.fromkeys(summary.warnings))
    if warnings:
        lines.append(f"  {len(warnings)} warning(s), each printed above (WARNING: ...) when it was found")
    head = (f"{task}: everything was already running with this configuration; nothing changed"
            if not summary.changed else f"{task}: deployment up (mode {plan.mode}, config {plan.config_hash})")
    return clean("\n".join([head] + lines))


def rollback_list_text(found: dict) -> str:
    """`rollback --list`: per host its deployed commit and the recorded deploys it can be rolled back
    to (commit, branch, when), newest first; a deploy whose images are gone is marked so."""
    from ..plan.rollback import ONLY_COMMIT_TAGGED
    lines = ["rollback --list: deploys each host can be rolled back to (`rollback` takes the newest, "
             "`rollback --to COMMIT` any)"]
    any_one = False
    for host, entry in found.items():
        cur = entry.get("current")
        now = (f"at {cur['commit'][:12]} ({cur.get('branch') or '?'}, {cur.get('at') or 'when unknown'})"
               if cur and cur.get("commit") else "runs images with no commit recorded" if cur else "no deploy recorded")
        lines.append(f"  {host}: {now}")
        for e in entry.get("earlier") or []:
            any_one = any_one or e["present"]
            gone = "" if e["present"] else "  [images no longer on the host: deploy it with start-all instead]"
            lines.append(f"    {e['commit'][:12]}  {e.get('branch') or '?'}  {e.get('at') or 'when unknown'}{gone}")
        if not entry.get("earlier"):
            lines.append("    (no earlier commit recorded)")
    if not any_one:
        lines.append(f"  nothing can be rolled back to: {ONLY_COMMIT_TAGGED.split('; ')[0].split('. `')[0]}")
    return clean("\n".join(lines))


def stop_workers_text(out: dict) -> str:
    """stop-verda's answer: where the worker was stopped, and whether the app host was checked."""
    tail = "app host NOT checked (unreachable)" if out.get("unchecked") else "app host untouched"
    killed = [h for h, found in (out.get("ended") or {}).items() if any(e["killed"] for e in found)]
    how = f"; KILLED (not a clean stop) on {', '.join(killed)}" if killed else ""
    deleted = [f"{name} (instance {rec.get('hostname')} deleted at {rec.get('deleted_at')}; volumes "
               f"{', '.join(rec.get('volumes') or []) or 'none'} kept)"
               for name, rec in (out.get("deleted") or {}).items() if rec.get("deleted_at")]
    gone = f"; deleted {', '.join(deleted)}: no longer billing" if deleted else ""
    return clean(f"stop-verda: stopped the worker on {', '.join(out['stopped']) or 'no host'}; {tail}{how}{gone}")


def stop_all_text(out: dict) -> str:
    return clean(f"stop-all: stopped {', '.join(out['stopped'])}")


def copy_text(copied: list[str], source: str, target: str) -> str:
    """copy-image's answer: how many images were copied, and which."""
    return clean(f"copy-image: {len(copied)} image(s) copied from {source} to {target}"
                 + (f": {', '.join(copied)}" if copied else " (the target already had them)"))


def diff_text(diffs) -> str:
    """`invoke diff`: per host the services start-all would create, recreate (and why), start or
    remove; the same lines start-all prints before acting."""
    from ..plan.diff import changed, summary_lines
    total = sum(len(changed(c)) for c in diffs.values())
    head = ("diff: nothing would change" if not total else
            f"diff: start-all would make {total} change(s)")
    return clean("\n".join([head] + [f"  {line}" for line in summary_lines(diffs)]))


def diff_json(diffs) -> str:
    import json
    from ..plan.diff import changed
    return json.dumps({"changes": sum(len(changed(c)) for c in diffs.values()),
                       "hosts": {h: [c.as_json() for c in changes] for h, changes in diffs.items()}}, indent=2)
def lock_text(host: str, seen, stale_after: float, prog: str = "comfyume-fab") -> str:
    """The `lock` task: who holds the deploy lock on `host` (which command, since when), and
    whether it is live or stale; `seen` is None when no lock is held."""
    if seen is None:
        return f"{host}: no deploy lock held"
    age_s = "" if seen.age is None else f", {seen.age} s ago"
    if not seen.holder:
        return (f"{host}: the deploy lock has no info file (the run that took it died before writing it){age_s}; "
                f"`{prog} lock-break` removes it")
    fields = dict(re.findall(r"(\w+)=(\S+)", seen.holder))
    who = clean(seen.holder.split()[0])
    what = ", ".join(x for x in (f"task {fields['task']}" if "task" in fields else "",
                                 f"pid {fields['pid']}" if "pid" in fields else "",
                                 f"rev {fields['rev']}" if "rev" in fields else "") if x)
    since = f" since {fields['since']}" if "since" in fields else ""
    head = clean(f"{host}: the deploy lock is held by {who}" + (f" ({what})" if what else "") + since + age_s)
    if seen.age is not None and seen.age > stale_after:
        return (f"{head}: STALE (older than timeouts.lock_wait {stale_after:g} s; that run probably died: "
                f"`{prog} lock-break` removes it)")
    return (f"{head}: live (younger than timeouts.lock_wait {stale_after:g} s; `{prog} start-all --wait-lock` "
            "waits for it)")
