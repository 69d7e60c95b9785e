"""The inference probe: post a tiny graph to the worker's ComfyUI, poll its history, and
prove the nodes really executed (ComfyUI caches identical graphs, so an input changes on
every run and `execution_cached` must list no node)."""
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
from ..host.facts.comfyui import PROMPT, PromptRejected, history_path, parse_history, parse_prompt_response
from ..host.ssh import Remote
from .links import http_via
from .result import CheckResult

SEED_INPUTS = ("seed", "noise_seed")


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
              host: str = "127.0.0.1", name: str = "inference") -> CheckResult:
    t0 = time.monotonic()
    deadline = t0 + timeout
    graph, changed = fresh_graph(user_graph, random.Random())

    def fail(detail: str, **data) -> CheckResult:
        return CheckResult(name, False, detail, time.monotonic() - t0, via.name, data=data)

    where = f"the worker's ComfyUI on {via.name} ({host}:{port})"
    try:
        status, body = http_via(via, host, port, "POST", PROMPT,
                                {"prompt": graph, "client_id": f"comfyume-fab-{uuid.uuid4().hex[:8]}"},
                                timeout=max(0.5, deadline - time.monotonic()))
        prompt_id = parse_prompt_response(status, body)
        pause = 0.01  # the model-free graph finishes in milliseconds: poll soon, then every 0.1 s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return fail(f"{where} accepted prompt {prompt_id} but it did not finish within {timeout:g} s",
                            diagnosis="timeout")
            status, body = http_via(via, host, port, "GET", history_path(prompt_id), timeout=max(0.5, left))
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
        return fail(f"{where} gave no answer within {timeout:g} s ({exc or type(exc).__name__})",
                    diagnosis="timeout")
    except (ParseError, ValueError) as exc:
        return fail(f"{where} answered something that is not ComfyUI's API: {exc}", diagnosis="protocol")
    latency = time.monotonic() - t0
    if not result.succeeded:
        return fail(f"{where} ran the probe but it failed: {result.error or result.status_str}",
                    diagnosis="execution")
    if result.cached_nodes and changed:
        return fail(f"{where} served nodes {', '.join(result.cached_nodes)} from its cache although an input "
                    "changed: nothing really executed", diagnosis="cached")
    note = "" if changed else " (the workflow has no seed/colour input to vary; ComfyUI may cache it)"
    return CheckResult(name, True, f"prompt {prompt_id[:8]} executed {len(result.executed_nodes)} nodes "
                       f"in {latency:.2f} s{note}", latency, via.name,
                       data={"latency_ms": round(latency * 1000, 1), "prompt_id": prompt_id})
