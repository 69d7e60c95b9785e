"""The `status --watch` screen (ops/watch.py draws it): a rich renderable per snapshot."""
from __future__ import annotations

from .reports import FRONTEND


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
        if h.deleted:  # rented, no instance now: on purpose, not a fault
            hosts.add_row(Text(h.name, "bold"), Text("-", "dim"), Text(h.deleted, "yellow"),
                          "", "")
            continue
        if not h.reachable and not h.read_at and not h.error:  # the first connection: nothing is wrong yet
            hosts.add_row(Text(h.name, "bold"), Text("-", "dim"), Text("connecting…", "dim"), "", "")
            continue
        if not h.reachable and not h.read_at:
            hosts.add_row(Text(h.name, "bold"), Text("-", "red"), Text(f"UNREACHABLE {h.error}".strip(), "red"), "", "")
            continue
        if not h.reachable:  # reconnecting: the last known state, marked stale
            stale = Text.assemble(_services_text(h.services, Text, dim=True),
                                  (f"  (last known, read {max(0.0, snap.at - h.read_at):.0f} s ago; "
                                   f"{h.error or 'reconnecting…'})", "yellow"))
            hosts.add_row(Text(h.name, "bold"), Text("UNREACHABLE", "red"), stale, Text(_gpu_text(h, Text).plain, "dim"),
                          Text(_probe_text(h.probe, Text).plain, "dim"))
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
        queue = Text.assemble(("queue ", "bold"), ("reading…", "dim"))
    return Group(head, Text(""), hosts, Text(""), queue)


def _services_text(services, Text, dim: bool = False):
    users = [s for s in services if FRONTEND.fullmatch(s["service"])]
    out = Text()

    def style(ok: bool) -> str:
        return "dim" if dim else ("green" if ok else "red")
    for s in services:
        if s in users:
            continue
        out.append(f"{s['service']} ", style(s["ok"]))
        if not s["ok"]:
            out.append(f"({s['state']}, {s['health']}) ", style(False))
    if users:
        bad = [s for s in users if not s["ok"]]
        out.append(f"users {len(users) - len(bad)}/{len(users)} healthy", style(not bad))
        for s in bad:
            out.append(f" {s['service']} ({s['state']}, {s['health']})", style(False))
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
