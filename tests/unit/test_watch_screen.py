"""The `status --watch` screen (issue 23, item 9): the first screen, while the connections are being
opened, is neutral ("connecting…", no red, no "queue unavailable"); a host that dropped shows its
last known state marked stale while it is reconnected; a refresh starts `interval` after the start
of the previous one. Rendered by the real renderer (rich) from the real Snapshot types."""
from __future__ import annotations

from rich.console import Console

from comfyume_fab.ops.watch import HostView, Snapshot
from comfyume_fab.present.watch import watch_screen

SERVICES = [{"service": "redis", "state": "running", "health": "healthy", "restarts": 0, "ok": True, "image": "r"},
            {"service": "user001", "state": "running", "health": "healthy", "restarts": 0, "ok": True, "image": "u"}]


def draw(snap: Snapshot) -> tuple[str, list[str]]:
    """The screen's text and the styles used (rich's own segments)."""
    console = Console(width=160, record=True, force_terminal=True, color_system="truecolor")
    segments = list(console.render(watch_screen(snap)))
    text = "".join(seg.text for seg in segments)
    styles = [str(seg.style) for seg in segments if seg.text.strip() and seg.style is not None]
    return text, styles


def test_the_first_screen_says_connecting_without_alarm():
    hosts = [HostView("mello", ("app",)), HostView("verda", ("worker",))]  # nothing read yet
    text, styles = draw(Snapshot(at=100.0, interval=2.0, hosts=hosts, queue=None, queue_error=""))
    assert "mello" in text and text.count("connecting…") == 2, text
    assert "UNREACHABLE" not in text and "unavailable" not in text, text
    assert not [s for s in styles if "red" in s], styles
    assert "every 2 s" in text


def test_a_first_connection_that_failed_is_red():
    hosts = [HostView("mello", ("app",), error="host mello, step connect: cannot reach 127.0.0.1:9")]
    text, styles = draw(Snapshot(at=100.0, interval=2.0, hosts=hosts, queue=None, queue_error="mello unreachable"))
    assert "UNREACHABLE host mello, step connect" in text and any("red" in s for s in styles)


def test_a_host_that_dropped_shows_its_last_known_state_marked_stale():
    mello = HostView("mello", ("app",), reachable=False, connecting=True, error="no answer for 3 s",
                     rtt_ms=4.0, read_at=95.0, connects=1, services=SERVICES)
    queue = {"depth": 2, "running": 1, "completed_per_min": 7, "heartbeat_age_s": {"worker-1": 3}}
    text, _ = draw(Snapshot(at=100.0, interval=2.0, hosts=[mello], queue=queue, queue_error="mello unreachable"))
    line = next(ln for ln in text.splitlines() if ln.startswith("mello"))
    assert "UNREACHABLE" in line and "redis" in line and "users 1/1 healthy" in line, line
    assert "(last known, read 5 s ago; no answer for 3 s)" in line, line
    assert "2 pending" in text and "(stale: mello unreachable)" in text


def test_a_refresh_starts_one_interval_after_the_start_of_the_previous_one():
    from comfyume_fab.ops.watch import next_wait
    assert abs(next_wait(started=10.0, interval=2.0, now=10.7) - 1.3) < 1e-9
    assert abs(next_wait(10.0, 2.0, 11.9) - 0.1) < 1e-9  # a slow read does not push the next one back
    assert next_wait(10.0, 2.0, 12.5) == 0.05  # overran: the next one at once
