"""Serverless inference, proved from where the queue manager calls it: the app host.

Every request's TCP connection is opened BY THE APP HOST (an SSH direct-tcpip channel, TLS on top
for https), so a firewall, DNS or routing problem of that host shows, never the laptop's. The key
travels only inside that encrypted request, never in a command line.

`probe_endpoint` proves three things about one tier's endpoint:
  1. it refuses a request without the key (404/401/403; anything else is a security finding: the
     deployment runs anyone's jobs on your GPUs);
  2. it answers with the key (Verda's gateway answers a wrong or missing key 404, "not found",
     which really means unauthorised: diagnosed as such);
  3. a tiny fresh graph really executes (the worker probe's rules: an input changed every time,
     no node served from cache, 0 executed nodes never ok), sent with `Prefer: respond-async`
     when the provider supports it (the wait for a replica, a cold start, then comes from the
     provider: `waiting_ms`), else synchronously, then its history read through the endpoint.
"""
from __future__ import annotations

import http.client
import json
import random
import ssl
import time
import uuid
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..errors import TunnelError
from ..host.facts import ParseError
from ..host.facts.comfyui import parse_history, parse_prompt_response, PromptRejected
from ..host.ssh.remote import Remote
from .probe import fresh_graph
from .result import CheckResult

REFUSED = (401, 403, 404)


class Endpoint:
    """One endpoint URL, called through `via` (the app host), with an optional Bearer key."""

    def __init__(self, via: Remote, url: str, key: str | None, timeout: float):
        self.via, self.url, self.key, self.timeout = via, url.rstrip("/"), key, timeout
        parts = urlsplit(self.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, with_key: bool = True,
             headers: Mapping[str, str] | None = None, timeout: float | None = None
             ) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body) of one request; raises TunnelError, OSError, HTTPException."""
        timeout = timeout or self.timeout
        with self.via.tunnel(self.host, self.port, timeout) as sock:
            sock.settimeout(timeout)
            if self.https:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            conn.sock = sock
            payload = json.dumps(body).encode() if body is not None else None
            head = {"Content-Type": "application/json"} if payload is not None else {}
            if with_key and self.key:
                head["Authorization"] = f"Bearer {self.key}"
            head.update(headers or {})
            conn.request(method, self.prefix + path, body=payload, headers=head)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def _text(body: bytes) -> str:
    return body[:160].decode(errors="replace").strip()


def probe_endpoint(via: Remote, tier: str, url: str, key: str | None, timeout: float,
                   user_graph: Mapping[str, Any] | None = None, name: str | None = None) -> list[CheckResult]:
    """[the key check, the inference check] for one tier's endpoint, from `via` (the app host)."""
    name = name or f"serverless-{tier}"
    ep = Endpoint(via, url, key, timeout)
    where = f"tier {tier} ({url}) from {via.name}"
    out = [_key_check(ep, name, where, key)]
    out.append(_inference(ep, name, where, key, timeout, user_graph))
    return out


def _key_check(ep: Endpoint, name: str, where: str, key: str | None) -> CheckResult:
    t0 = time.monotonic()
    try:
        status, _, body = ep.call("GET", "/queue", with_key=False, timeout=min(ep.timeout, 15))
    except (TunnelError, OSError, http.client.HTTPException) as exc:
        return CheckResult(f"{name}-key", False, f"{where} gave no answer without the key either "
                           f"({getattr(exc, 'cause', None) or exc or type(exc).__name__})",
                           time.monotonic() - t0, ep.via.name, data={"diagnosis": "unreachable"})
    took = time.monotonic() - t0
    if status in REFUSED:
        return CheckResult(f"{name}-key", True, f"refuses a request without the key (HTTP {status})", took,
                           ep.via.name, data={"without_key_status": status, "open": False})
    return CheckResult(f"{name}-key", False, f"SECURITY: {where} answered HTTP {status} to a request WITHOUT "
                       "the key: anyone who knows the URL can run jobs on these GPUs; set an inference key on the "
                       "deployment" + ("" if key else " and SERVERLESS_API_KEY"), took, ep.via.name,
                       data={"without_key_status": status, "open": True, "diagnosis": "open"})


def _inference(ep: Endpoint, name: str, where: str, key: str | None, timeout: float,
               user_graph: Mapping[str, Any] | None) -> CheckResult:
    t0 = time.monotonic()
    deadline = t0 + timeout
    graph, changed = fresh_graph(user_graph, random.Random())

    def fail(detail: str, diagnosis: str, **data) -> CheckResult:
        return CheckResult(name, False, detail, time.monotonic() - t0, ep.via.name,
                           data={"diagnosis": diagnosis, **data})

    def left() -> float:
        return max(0.5, deadline - time.monotonic())
    body = {"prompt": graph, "client_id": f"comfyume-fab-{uuid.uuid4().hex[:8]}"}
    waiting_ms = running_ms = None
    try:
        status, headers, raw = ep.call("POST", "/prompt", body, headers={"Prefer": "respond-async"},
                                       timeout=left())
        accepted_s = time.monotonic() - t0
        if status == 202:  # asynchronous: an execution id, then the provider's status
            exec_id = (json.loads(raw or b"{}") or {}).get("Id")
            if not exec_id:
                return fail(f"{where} answered 202 without an execution Id: {_text(raw)}", "protocol")
            pause = 0.05
            while True:
                st, _, sraw = ep.call("GET", f"/status/{exec_id}", timeout=left())
                info = json.loads(sraw or b"{}") if st == 200 else {}
                if info.get("Status") in ("Completed", "Failed"):
                    break
                if time.monotonic() > deadline:
                    return fail(f"{where} did not finish execution {exec_id} within {timeout:g} s "
                                f"(last status {info.get('Status') or st})", "timeout")
                time.sleep(pause)
                pause = min(0.5, pause * 2)
            waiting_ms, running_ms = info.get("waiting_ms"), info.get("running_ms")
            status, headers, raw = ep.call("GET", f"/result/{exec_id}", timeout=left())
            mode = "async"
        else:
            mode = "sync"
            waited = headers.get("x-standin-waited-ms")
            waiting_ms = int(waited) if waited and waited.isdigit() else None
        if status in REFUSED:
            return fail(_refused_sentence(where, status, key, raw), "key", http_status=status)
        if status == 503:
            return fail(f"{where} has no replica to serve the request (HTTP 503: {_text(raw)}): the deployment "
                        "may be scaled to zero; check its replicas (status shows them when serverless.api is set) "
                        "or run `invoke warm`", "no-replicas", http_status=status)
        prompt_id = parse_prompt_response(status, raw)
        t_run = time.monotonic()
        pause = 0.02
        while True:
            st, _, hraw = ep.call("GET", f"/history/{prompt_id}", timeout=left())
            if st != 200:
                return fail(f"{where} answered HTTP {st} to GET /history/{prompt_id}: {_text(hraw)}", "http")
            result = parse_history(json.loads(hraw or b"{}"), prompt_id)
            if result is not None:
                break
            if time.monotonic() > deadline:
                return fail(f"{where} accepted prompt {prompt_id} but it did not finish within {timeout:g} s",
                            "timeout", prompt_id=prompt_id)
            time.sleep(pause)
            pause = min(0.2, pause * 2)
    except TunnelError as exc:
        return fail(f"{where} is not reachable: {exc.cause} (is the deployment's URL right, and up?)", exc.kind)
    except PromptRejected as exc:
        if exc.status in REFUSED:
            return fail(_refused_sentence(where, exc.status, key, exc.body or b""), "key", http_status=exc.status)
        return fail(f"{where} rejected the probe graph: {exc}", "rejected")
    except (OSError, http.client.HTTPException) as exc:
        return fail(f"{where} gave no answer within {timeout:g} s ({exc or type(exc).__name__})", "timeout")
    except (ParseError, ValueError) as exc:
        return fail(f"{where} answered something that is not ComfyUI's API: {exc}", "protocol")
    total = time.monotonic() - t0
    if running_ms is None or mode == "sync":
        running_ms = round((time.monotonic() - t_run) * 1000, 1) if mode == "sync" else running_ms
    data = {"mode": mode, "latency_ms": round(total * 1000, 1), "accepted_ms": round(accepted_s * 1000, 1),
            "waiting_ms": waiting_ms, "running_ms": running_ms, "prompt_id": prompt_id,
            "executed_nodes": len(result.executed_nodes)}
    if not result.succeeded:
        return fail(f"{where} ran the probe but it failed: {result.error or result.status_str}", "execution", **data)
    if result.cached_nodes and changed:
        return fail(f"{where} served nodes {', '.join(result.cached_nodes)} from its cache although an input "
                    "changed: nothing really executed", "cached", **data)
    if not result.executed_nodes:
        return fail(f"{where} answered the probe graph but executed 0 nodes: nothing really ran",
                    "not-executed", **data)
    split = (f"waited {waiting_ms / 1000:.1f} s for a replica (cold start), " if waiting_ms is not None else "")
    return CheckResult(name, True, f"prompt {prompt_id[:8]} executed {len(result.executed_nodes)} nodes "
                       f"({mode}): {split}{total:.2f} s in all", total, ep.via.name, data=data)


def _refused_sentence(where: str, status: int, key: str | None, body: bytes) -> str:
    if not key:
        return (f"{where} answered HTTP {status} and no SERVERLESS_API_KEY is set: the endpoint needs its "
                "inference key (set SERVERLESS_API_KEY in the secrets)")
    return (f"{where} refused the key: HTTP {status} ('{_text(body) or 'not found'}'), which from Verda's gateway "
            "means unauthorised, not a missing page: SERVERLESS_API_KEY is wrong for this deployment (copy the "
            "inference key from the deployment's page)")


def qm_health(via: Remote, port: int, timeout: float) -> tuple[dict | None, str | None]:
    """The queue manager's /health as the app host sees it on 127.0.0.1:port: (body, error)."""
    ep = Endpoint(via, f"http://127.0.0.1:{port}", None, timeout)
    try:
        status, _, raw = ep.call("GET", "/health", with_key=False)
    except (TunnelError, OSError, http.client.HTTPException) as exc:
        return None, f"no answer from the queue manager on {via.name} 127.0.0.1:{port} " \
                     f"({getattr(exc, 'cause', None) or exc or type(exc).__name__})"
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None, f"the queue manager's /health answered HTTP {status} with something that is not JSON"
    return (body if isinstance(body, dict) else None), (None if status == 200 else f"/health answered HTTP {status}")
