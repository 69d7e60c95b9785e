"""The queue-aware inference probe (issue 13): the /queue and /history parsers on ComfyUI 0.8.0's
recorded answers, the pure busy judgement, and run_probe against the stand-in worker (a real HTTP
server with ComfyUI's queue contract). The connection is opened from this machine instead of
through SSH (`Local` below); the lab tests drive the same probe through real SSH tunnels."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from comfyume_fab.checks.probe import busy_evidence, fresh_graph, run_probe
from comfyume_fab.host.facts.comfyui import (Completed, QueueItem, QueueState, parse_last_completed, parse_queue,
                                             queue_delete_body)
from comfyume_fab.host.facts import ParseError
from tests.support import Local, call, get_json, post_json, slow, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui-0.8.0-cpu"
CAPTURE = json.loads((FIXTURES / "probe-capture.json").read_text())


def test_queue_parser_reads_the_recorded_idle_queue_and_a_busy_one():
    assert parse_queue(json.loads((FIXTURES / "queue.json").read_text())) == QueueState((), ())
    entry = next(iter(CAPTURE["history"].values()))
    item = entry["prompt"]  # ComfyUI keeps the queue item as the history's "prompt"
    later = [7, "p-later", item[2], {"client_id": "u2"}, item[4]]
    front = [-8, "p-front", item[2], {"client_id": "u3", "create_time": 5}, item[4]]
    q = parse_queue({"queue_running": [item], "queue_pending": [later, front]})
    assert q.running == (QueueItem(0, item[1], item[3]["client_id"], 1795716177775),)
    assert [i.prompt_id for i in q.pending] == ["p-front", "p-later"]  # run order: lowest number first
    assert q.busy and q.others(item[1]).running == () and not QueueState((), ()).busy
    with pytest.raises(ParseError):
        parse_queue({"queue_running": [["no-number", "x"]], "queue_pending": []})
    with pytest.raises(ParseError):
        parse_queue({"queue_pending": []})
    assert queue_delete_body(["a"]) == {"delete": ["a"]}


def test_last_completed_is_read_from_the_recorded_history():
    last = parse_last_completed(CAPTURE["history"])
    assert last == Completed(next(iter(CAPTURE["history"])), 1795716177778, "success")
    assert parse_last_completed({}) is None


def test_busy_is_healthy_while_it_progresses_and_not_beyond_the_bound():
    run = QueueItem(3, "abcdef123456", "user", create_time_ms=100_000)
    q = QueueState((run,), (QueueItem(4, "p2", "user", 101_000),))
    last = Completed("done", 90_000, "success")
    ok = busy_evidence(q, last, busy_after=60, now_ms=130_000)
    assert ok["progressing"] and ok["data"]["running_for_s"] == 30 and ok["data"]["pending"] == 1
    assert ok["text"] == "running prompt abcdef12 for 30 s, 1 pending, last prompt completed 40 s ago"
    stuck = busy_evidence(q, last, busy_after=60, now_ms=200_000)
    assert not stuck["progressing"] and stuck["data"]["running_for_s"] == 100
    # queued before the previous prompt finished: it has run only since then
    assert busy_evidence(q, Completed("d", 150_000, "success"), 60, 200_000)["data"]["running_for_s"] == 50


@pytest.fixture
def worker(start, tmp_path):
    return start("worker", "COMFYUI_LISTEN_PORT", {"OUTPUT_DIR": str(tmp_path / "out"),
                                                  "STANDIN_BLUR_RATE": "1000000"}, ready_path="/system_stats")


def _probe(worker, **kw):
    return run_probe(Local(), worker.port, host="127.0.0.1", **kw)


def test_idle_worker_executes_the_probe(worker):
    res = _probe(worker, timeout=10)
    assert res.ok and not res.warning and res.data["executed_nodes"] == 2 and "busy" not in res.data


def test_busy_worker_is_ok_busy_and_the_probe_leaves_nothing_queued(worker):
    user = post_json(worker.url + "/prompt", {"prompt": slow(20), "client_id": "user"})[1]["prompt_id"]
    wait_for(lambda: get_json(worker.url + "/queue")[1]["queue_running"], what="the user's prompt to run")
    res = _probe(worker, timeout=1.5, busy_after=60)
    assert res.ok and res.data["diagnosis"] == "busy", res.detail
    assert res.data["busy"]["running"] == user and res.data["busy"]["progressing"]
    assert "withdrawn from the queue" in res.detail and f"running prompt {user[:8]}" in res.detail
    queue = get_json(worker.url + "/queue")[1]
    assert queue["queue_pending"] == [] and [i[1] for i in queue["queue_running"]] == [user]
    call("POST", worker.url + "/interrupt", b"")


def test_stuck_worker_fails_and_posts_nothing(worker):
    user = post_json(worker.url + "/prompt", {"prompt": slow(20), "client_id": "user"})[1]["prompt_id"]
    wait_for(lambda: get_json(worker.url + "/queue")[1]["queue_running"], what="the user's prompt to run")
    time.sleep(1.2)
    res = _probe(worker, timeout=5, busy_after=1)
    assert not res.ok and res.data["diagnosis"] == "stuck" and "makes no progress" in res.detail, res.detail
    assert get_json(worker.url + "/queue")[1]["queue_pending"] == []
    assert user[:8] in res.detail
    call("POST", worker.url + "/interrupt", b"")


def test_a_workflow_that_cannot_be_varied_and_executes_nothing_is_a_warning(worker):
    # No int seed/colour input to vary (here the colour is given as a string, which ComfyUI converts;
    # on a real server, a seed that arrives through a link): the second run is served from the cache.
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": "5"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}}}
    assert fresh_graph(graph, random.Random())[1] is False
    first = _probe(worker, timeout=10, user_graph=graph)
    second = _probe(worker, timeout=10, user_graph=graph)
    assert first.ok and not first.warning and first.data["executed_nodes"] == 2
    assert second.ok and second.warning and second.data["executed_nodes"] == 0
    assert "could not be varied (no seed/colour input reachable)" in second.detail
