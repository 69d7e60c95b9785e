"""Renting without the lab: what needs no provider and no host. The bill read from the records,
the "deleted on purpose" sentence, the rent question (refused without --yes or a terminal),
--delete refused on a host this tool did not rent, a rented host without an instance named as
such by the SSH layer, and start-all's --dry-run naming the rent step."""
from __future__ import annotations

import io
import os
from datetime import datetime, timedelta, timezone

import pytest

from comfyume_fab.cloud import record
from comfyume_fab.errors import ConfigError, UnreachableError
from comfyume_fab.inventory import load_inventory
from tests.support import DUAL, ENV, load_here

RENTED = """\
mode: dual-server
hosts:
  mello: {address: mello, tailscale_ip: 100.99.216.71, roles: [app]}
  verda:
    roles: [worker]
    provider: {instance_type: 1H100.80S.30V, volumes: [vol-models]}
"""


@pytest.fixture
def inv(tmp_path, monkeypatch):
    """The rented inventory, loaded as plan does (no cloud secrets: the bill comes from the records)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts.yaml").write_text(RENTED)
    return load_inventory("hosts.yaml", environ=dict(ENV), need_secrets=False)


def test_the_bill_from_the_records(inv):
    from comfyume_fab.ops.bill import deleted_sentence, read_bill
    two_hours_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record.save(inv, "verda", {"id": "i-1", "hostname": "comfyume-worker-verda", "ip": "10.0.0.7",
                               "tailscale_ip": "100.64.0.7", "status": "running", "instance_type": "1H100.80S.30V",
                               "location": "FIN-01", "spot": False, "price_per_hour": 2.19,
                               "volumes": ["vol-models"], "created_at": two_hours_ago, "created_by": "me@laptop"})
    bill, checks, deleted = read_bill(inv)
    b = bill["hosts"]["verda"]
    assert (b["state"], b["price_per_hour"], b["instance_type"]) == ("rented", 2.19, "1H100.80S.30V")
    assert b["hours"] == pytest.approx(2.0, abs=0.01) and b["cost_so_far"] == pytest.approx(4.38, abs=0.03)
    assert bill["burn_per_hour"] == 2.19 and bill["balance"] is None and bill["runway_hours"] is None
    assert deleted == {}
    (line,) = [c for c in checks if c.name == "bill-verda"]
    assert line.ok and "at 2.19 USD/h, running 2.0 h, cost so far 4.3" in line.detail
    rec = record.mark_deleted(inv, "verda", "me@laptop", at="2026-12-03T12:00:00Z")
    bill, checks, deleted = read_bill(inv)
    assert bill["hosts"]["verda"]["state"] == "deleted" and bill["burn_per_hour"] == 0 and set(deleted) == {"verda"}
    assert deleted_sentence("verda", rec) == (
        "deleted on purpose (stop-verda --delete by me@laptop at 2026-12-03T12:00:00Z); instance comfyume-worker-verda "
        "is gone and not billing, data volumes vol-models kept: start-all rents a new one")


def test_renting_is_asked_and_refused_without_yes_or_a_terminal():
    from comfyume_fab.present.confirm import rent_confirmer
    line = "verda: renting 1H100.80S.30V (on demand) in FIN-01 at 2.19/h"
    with pytest.raises(ConfigError) as info:
        rent_confirmer(False, stdin=io.StringIO("y\n"), stream=io.StringIO())(line)  # not a terminal
    assert info.value.problems == [f"{line}: not rented, as it was not confirmed (rerun with --yes to rent it, or "
                                   "on a terminal to be asked)"]
    rent_confirmer(True, stdin=io.StringIO(""), stream=io.StringIO())(line)  # --yes
    main, sub = os.openpty()
    try:
        with open(sub, "r", closefd=False) as tty_in, open(sub, "w", closefd=False) as tty_out:
            os.write(main, b"y\n")
            rent_confirmer(False, stdin=tty_in, stream=tty_out)(line)
    finally:
        os.close(main)
        os.close(sub)


def test_delete_is_refused_on_a_host_this_tool_did_not_rent(tmp_path, monkeypatch):
    from comfyume_fab.ops.stop import stop_workers
    monkeypatch.chdir(tmp_path)
    plain = load_here(DUAL)
    with pytest.raises(ConfigError) as info:
        stop_workers(plain, lambda _m: None, delete=True)
    assert info.value.problems == [
        "--delete: verda is not rented by this tool (no provider section in hosts.yaml); --delete only deletes "
        "instances start-all rented (use --host NAME)"]


def test_a_rented_host_without_an_instance_is_named_so_not_dialled(inv):
    from comfyume_fab.host.session import Session
    resolved = record.resolve(inv)
    with Session(resolved, [resolved.host("verda")]) as s:
        s.connect()
    err = s.errors["verda"]
    assert isinstance(err, UnreachableError)
    assert err.sentence() == ("host verda, step connect: verda is rented (provider: verda) and no instance of it is "
                              "recorded now (start-all rents one; `status` says whether it was deleted on purpose)")


def test_start_all_dry_run_names_the_rent_step(inv):
    from comfyume_fab.plan.planner import make_plan
    from comfyume_fab.plan.steps import steps
    first = steps(make_plan(record.resolve(inv)), "start-all")[0]
    assert first[0] == "verda" and first[1].startswith("(verda API) rent 1H100.80S.30V (on demand) in FIN-01: "
                                                       "availability, price confirmed (--yes)")
    record.save(inv, "verda", {"id": "i-1", "ip": "10.0.0.7"})  # rented: nothing to rent
    assert steps(make_plan(record.resolve(inv)), "start-all")[0][1].startswith("(ssh) connect")


def test_watch_shows_a_deleted_rented_worker_as_deleted_and_never_dials_it(inv):
    from comfyume_fab.ops.watch import Watch
    from comfyume_fab.present.watch import watch_screen
    record.save(inv, "verda", {"id": "i-1", "hostname": "comfyume-worker-verda", "volumes": ["vol-models"]})
    record.mark_deleted(inv, "verda", "me@laptop", at="2026-12-03T12:00:00Z")
    w = Watch(inv, probe_every=30)
    (verda,) = [v for v in w.snapshot().hosts if v.name == "verda"]
    assert verda.deleted.startswith("deleted on purpose (stop-verda --delete by me@laptop")
    assert [t.hp.name for t in w._running()] == ["mello"] and w.probes == []  # no connection, no probe
    shown = render_text_of(watch_screen(w.snapshot()))
    assert "deleted on purpose" in shown and "UNREACHABLE" not in shown


def render_text_of(renderable) -> str:
    from rich.console import Console
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()
