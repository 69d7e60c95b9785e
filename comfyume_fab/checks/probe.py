"""The inference probe: read the worker's queue, post a tiny graph first in line (`front: true`),
poll its history, and prove the nodes really executed (ComfyUI caches identical graphs, so an
input changes on every run and `execution_cached` must list no node; 0 executed nodes is never ok).
A worker busy with users' prompts is healthy while it makes progress; the probe withdraws its own
prompt (`POST /queue {"delete": [id]}`) whenever it gives up, so it leaves nothing behind."""
from __future__ import annotations

import copy
import http.client
import json
import random
import time
import uuid
from typing import Any, Mapping

from ..errors import TunnelError
from ..host.facts import ParseError
from ..host.facts.comfyui import (LAST_HISTORY, PROMPT, QUEUE, Completed, PromptRejected, QueueState, history_path,
                                  parse_history, parse_last_completed, parse_prompt_response, parse_queue,
                                  queue_delete_body)
from ..host.ssh.remote import Remote
from .links import http_via
from .result import CheckResult

SEED_INPUTS = ("seed", "noise_seed")
CLEANUP_S = 5.0  # seconds the probe still takes, after giving up, to withdraw its prompt and read the queue


def builtin_graph(color: int) -> dict[str, Any]:
    """ComfyUI's model-free graph: runs anywhere, executes in milliseconds."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "comfyume-fab-probe"}},
    }


def fresh_graph(user_graph: Mapping[str, Any] | None, rng: random.Random) -> tuple[dict[str, Any], bool]:
    """The graph to post, with an input changed so ComfyUI cannot serve it from its cache.
    Returns (graph, changed); changed is False when no seed/colour input exists to vary."""
    if user_graph is None:
        return builtin_graph(rng.randrange(0, 0x1000000)), True
    graph = copy.deepcopy(dict(user_graph))
    changed = False
    for node in graph.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for key in SEED_INPUTS:
            if isinstance(inputs.get(key), int):
                inputs[key] = rng.randrange(0, 2**48)
                changed = True
        if node.get("class_type") == "EmptyImage" and isinstance(inputs.get("color"), int):
            inputs["color"] = rng.randrange(0, 0x1000000)
            changed = True
    return graph, changed


def run_probe(via: Remote, port: int, timeout: float, user_graph: Mapping[str, Any] | None = None,
              host: str = "127.0.0.1", name: str = "inference", busy_after: float = 900.0) -> CheckResult:
    """Read the worker's queue, post a fresh graph FIRST in line (`front: true`), wait for it; a
    worker busy with users' prompts is healthy while it makes progress (a prompt finished, or the
    running one has run for less than `busy_after` s). The probe never leaves its prompt behind:
    when it gives up, it deletes it from the queue."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    graph, changed = fresh_graph(user_graph, random.Random())
    prompt_id: str | None = None

    def fail(detail: str, **data) -> CheckResult:
        return CheckResult(name, False, detail, time.monotonic() - t0, via.name, data=data)

    limit = {"at": deadline}  # moved a few seconds on for the clean-up once the probe gives up

    def call(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        return http_via(via, host, port, method, path, body, timeout=max(0.5, limit["at"] - time.monotonic()))

    where = f"the worker's ComfyUI on {via.name} ({host}:{port})"
    try:
        before = _read_queue(call)
        busy = _busy(call, before, None, busy_after)
        if busy is not None and not busy["progressing"]:
            return fail(f"{where} is busy but makes no progress: {busy['text']} (over timeouts.busy "
                        f"{busy_after:g} s; see the worker's logs, or interrupt the stuck prompt)",
                        diagnosis="stuck", busy=busy["data"])
        status, body = call("POST", PROMPT, {"prompt": graph, "front": True,
                                             "client_id": f"comfyume-fab-{uuid.uuid4().hex[:8]}"})
        prompt_id = parse_prompt_response(status, body)
        pause = 0.01  # the model-free graph finishes in milliseconds: poll soon, then every 0.1 s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                limit["at"] = time.monotonic() + CLEANUP_S
                return _gave_up(call, where, prompt_id, timeout, busy_after, fail, t0, via.name, name)
            status, body = call("GET", history_path(prompt_id))
            if status != 200:
                return fail(f"{where} answered HTTP {status} to GET /history/{prompt_id}: "
                            f"{body[:160].decode(errors='replace')}", diagnosis="http")
            result = parse_history(json.loads(body or b"{}"), prompt_id)
            if result is not None:
                break
            time.sleep(min(pause, max(0.0, left)))
            pause = min(0.1, pause * 2)
    except TunnelError as exc:
        return fail(f"{where} is not reachable: {exc.cause} (is the worker container running?)",
                    diagnosis=exc.kind)
    except PromptRejected as exc:
        if exc.status >= 500:  # the server failed; the workflow was not judged at all
            return fail(f"{where} failed with a server error: {exc}", diagnosis="http")
        return fail(f"{where} rejected the probe workflow: {exc}", diagnosis="rejected")
    except (OSError, http.client.HTTPException) as exc:
        limit["at"] = time.monotonic() + CLEANUP_S
        withdrawn = _withdraw(call, prompt_id) if prompt_id else ""
        return fail(f"{where} gave no answer within {timeout:g} s ({exc or type(exc).__name__}){withdrawn}",
                    diagnosis="timeout")
    except (ParseError, ValueError) as exc:
        return fail(f"{where} answered something that is not ComfyUI's API: {exc}", diagnosis="protocol")
    latency = time.monotonic() - t0
    if not result.succeeded:
        return fail(f"{where} ran the probe but it failed: {result.error or result.status_str}",
                    diagnosis="execution")
    executed = result.executed_nodes
    if result.cached_nodes and changed:
        return fail(f"{where} served nodes {', '.join(result.cached_nodes)} from its cache although an input "
                    "changed: nothing really executed", diagnosis="cached")
    note = "" if busy is None else f" (busy: {busy['text']})"
    data = {"latency_ms": round(latency * 1000, 1), "prompt_id": prompt_id, "executed_nodes": len(executed)}
    if busy is not None:
        data["busy"] = busy["data"]
    if not executed:
        if user_graph is None:
            return fail(f"{where} answered the built-in probe graph but executed 0 nodes: nothing really ran",
                        diagnosis="not-executed")
        return CheckResult(name, True, f"prompt {prompt_id[:8]} executed 0 nodes in {latency:.2f} s: the probe "
                           "workflow could not be varied (no seed/colour input reachable), so ComfyUI served it "
                           "from its cache; give probe.workflow a seed or colour input, or remove it to use the "
                           f"built-in graph{note}", latency, via.name, warning=True,
                           data={**data, "diagnosis": "not-varied"})
    return CheckResult(name, True, f"prompt {prompt_id[:8]} executed {len(executed)} nodes "
                       f"in {latency:.2f} s{note}", latency, via.name, data=data)


def _read_queue(call) -> QueueState:
    status, body = call("GET", QUEUE)
    if status >= 500:  # the server failed (reported as such, like a 5xx to POST /prompt)
        raise PromptRejected(f"ComfyUI answered GET {QUEUE} with HTTP {status} instead of 200: "
                             f"{body[:160].decode(errors='replace')}", status=status, body=body)
    if status != 200:
        raise ParseError("HTTP 200 from GET /queue", f"HTTP {status}: {body[:160].decode(errors='replace')}")
    return parse_queue(json.loads(body or b"{}"))


def _busy(call, queue: QueueState, own: str | None, busy_after: float, now_ms: int | None = None) -> dict | None:
    """None when no user prompt is queued; else the evidence (the running prompt, how long it has
    run, the pending count, the last completed prompt's age) and whether it is progressing."""
    others = queue.others(own)
    if not others.busy:
        return None
    status, body = call("GET", LAST_HISTORY)
    last = parse_last_completed(json.loads(body or b"{}")) if status == 200 else None
    return busy_evidence(others, last, busy_after, now_ms if now_ms is not None else int(time.time() * 1000))


def busy_evidence(others: QueueState, last: Completed | None, busy_after: float, now_ms: int) -> dict:
    """Pure: what a busy queue shows. The running prompt started when it was queued or when the
    previous one finished, whichever is later; it is progressing while that is under `busy_after`."""
    done_age = (now_ms - last.finished_ms) / 1000 if last and last.finished_ms else None
    run = others.running[0] if others.running else None
    ran_for = None
    if run is not None and run.create_time_ms is not None:
        started = max(run.create_time_ms, last.finished_ms if last and last.finished_ms else 0)
        ran_for = max(0.0, (now_ms - started) / 1000)
    if run is None:
        progressing = done_age is None or done_age <= busy_after
    else:
        progressing = ran_for is None or ran_for <= busy_after
    parts = [f"running prompt {run.prompt_id[:8]} for {ran_for:.0f} s" if run and ran_for is not None
             else f"running prompt {run.prompt_id[:8]}" if run else "nothing running",
             f"{len(others.pending)} pending",
             f"last prompt completed {done_age:.0f} s ago" if done_age is not None else "no prompt completed yet"]
    return {"progressing": progressing, "text": ", ".join(parts),
            "data": {"running": run.prompt_id if run else None, "running_for_s": ran_for,
                     "pending": len(others.pending), "last_completed_age_s": done_age,
                     "progressing": progressing}}


def _withdraw(call, prompt_id: str) -> str:
    """Delete the probe's own prompt from the queue; a clause saying so (or that it could not)."""
    try:
        status, _ = call("POST", QUEUE, queue_delete_body([prompt_id]))
    except (TunnelError, OSError, http.client.HTTPException):
        status = 0
    return (f"; its prompt {prompt_id[:8]} was withdrawn from the queue" if status == 200 else
            f"; withdrawing its prompt {prompt_id[:8]} failed (it may still run once)")


def _gave_up(call, where, prompt_id, timeout, busy_after, fail, t0, via_name, name) -> CheckResult:
    """The probe's prompt did not finish in time: withdraw it, then judge by the queue: users'
    prompts ahead of it that progress make the worker busy, and healthy."""
    withdrawn = _withdraw(call, prompt_id)
    try:
        queue = _read_queue(call)
        if any(i.prompt_id == prompt_id for i in queue.running):
            withdrawn = (f"; its prompt {prompt_id[:8]} was already running (ComfyUI deletes only pending "
                         "prompts) and finishes on its own")
        busy = _busy(call, queue, prompt_id, busy_after)
    except (TunnelError, OSError, http.client.HTTPException, ParseError, ValueError):
        busy = None
    if busy is None:
        return fail(f"{where} accepted prompt {prompt_id} but it did not finish within {timeout:g} s{withdrawn}",
                    diagnosis="timeout")
    if not busy["progressing"]:
        return fail(f"{where} is busy but makes no progress: {busy['text']} (over timeouts.busy {busy_after:g} s; "
                    f"see the worker's logs, or interrupt the stuck prompt){withdrawn}", diagnosis="stuck",
                    busy=busy["data"])
    took = time.monotonic() - t0
    return CheckResult(name, True, f"busy with users' prompts and making progress: {busy['text']}; the probe "
                       f"waited first in line for {timeout:g} s{withdrawn}", took, via_name,
                       data={"busy": busy["data"], "diagnosis": "busy"})
