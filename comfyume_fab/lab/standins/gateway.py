"""STAND-IN of Verda's serverless container gateway (lab only; not Verda's service).

One process plays one or more container deployments, each on its own port, all in front of one
worker ComfyUI (the lab's stand-in worker in ComfyUI API mode, or a real ComfyUI), plus the
deployment API the `verda` SDK calls for replicas and scaling. What it reproduces, as the team
measured it and as Verda documents it:

Inference, on each deployment's port (`https://containers.datacrunch.io/<deployment>/` in
production); every request needs `Authorization: Bearer <GATEWAY_API_KEY>`:
  - a wrong or missing key answers **404 Not Found** (not 401: the team's incident); with
    GATEWAY_API_KEY empty the deployment is open to anyone (the security finding status reports);
  - any other path is forwarded to the worker ComfyUI unchanged (POST /prompt, GET /history/<id>,
    GET /queue, ...), synchronously: the answer is ComfyUI's;
  - `Prefer: respond-async` on a POST answers 202 {"Id": <execution id>} at once; then
    GET /status/<Id> -> {"Id", "Status": "Queue"|"Inference"|"Completed"|"Failed", "waiting_ms",
    "running_ms"} and GET /result/<Id> -> ComfyUI's answer (404 while not finished);
  - scale from zero: with no replica running, a request waits GATEWAY_COLD_START seconds (a cold
    start) while one starts; a replica idle for scale_down_policy.delay_seconds stops (down to the
    minimum); with max_replica_count 0 no replica can start and a request answers 503 after
    GATEWAY_QUEUE_TIMEOUT seconds. Answers carry X-Standin-Waited-Ms (time spent waiting for a
    replica) -- a stand-in header, not Verda's.

Deployment API (`https://api.verda.com/v1` in production), under /v1 on every port:
  POST  /v1/oauth2/token  {"grant_type": "client_credentials", "client_id", "client_secret"}
                          -> {"access_token", "token_type": "Bearer", "expires_in"}; 401 otherwise
  GET   /v1/container-deployments/<name>           {"name", "scaling", "endpoint_base_url", ...}
  GET   /v1/container-deployments/<name>/status    {"status": "healthy"}
  GET   /v1/container-deployments/<name>/scaling   ScalingOptions (min/max_replica_count, policies)
  PATCH /v1/container-deployments/<name>/scaling   merge the given fields; answer the new options
  GET   /v1/container-deployments/<name>/replicas  {"list": [{"id", "status", "started_at"}]}
  (Bearer <access_token>; 401 without; 404 for an unknown deployment)

Env: GATEWAY_DEPLOYMENTS ("name:port,name:port", default "lab-deployment:8000"), GATEWAY_UPSTREAM
(the worker ComfyUI, default http://127.0.0.1:8188), GATEWAY_API_KEY, GATEWAY_CLIENT_ID,
GATEWAY_CLIENT_SECRET, GATEWAY_COLD_START (3 s), GATEWAY_SCALE_DOWN_DELAY (300 s),
GATEWAY_MIN_REPLICAS (0), GATEWAY_MAX_REPLICAS (1), GATEWAY_QUEUE_TIMEOUT (5 s).
"""
from __future__ import annotations

import http.client
import json
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import ThreadingHTTPServer

try:
    from . import common
except ImportError:  # run as a script inside the stand-in container
    import common

API_PREFIX = "/v1/"
ASYNC_STATES = ("Queue", "Inference", "Completed", "Failed")


class Deployment:
    """One container deployment: its scaling options, its replicas, its async executions."""

    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.lock = threading.Condition()
        self.scaling = {
            "min_replica_count": common.env_int("GATEWAY_MIN_REPLICAS", 0),
            "max_replica_count": common.env_int("GATEWAY_MAX_REPLICAS", 1),
            "scale_down_policy": {"delay_seconds": common.env_int("GATEWAY_SCALE_DOWN_DELAY", 300)},
            "scale_up_policy": {"delay_seconds": 0},
            "queue_message_ttl_seconds": 300, "concurrent_requests_per_replica": 1,
            "scaling_triggers": {"queue_load": {"threshold": 1}}}
        self.replicas: list[dict] = []  # {"id", "ready_at", "started_at"}
        self.last_request = time.time()
        self.executions: dict[str, dict] = {}

    # -- replicas ------------------------------------------------------------------------------
    def _settle(self, now: float) -> None:
        """Apply scaling: the minimum is always there (starting), idle replicas above it stop."""
        low, high = self.scaling["min_replica_count"], self.scaling["max_replica_count"]
        delay = self.scaling["scale_down_policy"].get("delay_seconds", 300)
        keep = max(low, 0)
        if now - self.last_request < delay:
            keep = max(keep, len(self.replicas))
        keep = min(keep, high)
        del self.replicas[keep:]
        while len(self.replicas) < min(low, high):
            self._start_replica(now)

    def _start_replica(self, now: float) -> dict:
        replica = {"id": uuid.uuid4().hex[:12], "ready_at": now + common.env_float("GATEWAY_COLD_START", 3.0),
                   "started_at": now}
        self.replicas.append(replica)
        return replica

    def replica_list(self) -> list[dict]:
        with self.lock:
            now = time.time()
            self._settle(now)
            return [{"id": r["id"], "status": "running" if now >= r["ready_at"] else "provisioning",
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["started_at"]))}
                    for r in self.replicas]

    def wait_for_replica(self) -> float:
        """Block until a replica is ready (a cold start when none runs); the seconds waited.
        Raises HTTPError 503 when none can start (max_replica_count 0)."""
        t0 = time.time()
        with self.lock:
            self.last_request = t0
            self._settle(t0)
            if self.scaling["max_replica_count"] <= 0:
                pass
            elif not self.replicas:
                self._start_replica(t0)
            ready = min((r["ready_at"] for r in self.replicas), default=None)
        if ready is None:
            time.sleep(common.env_float("GATEWAY_QUEUE_TIMEOUT", 5.0))
            raise common.HTTPError(503, {"code": "no_replicas", "message": (
                f"deployment {self.name} has max_replica_count 0: no replica can start to serve the request")})
        if ready > time.time():
            time.sleep(ready - time.time())
        with self.lock:
            self.last_request = time.time()
        return time.time() - t0


DEPLOYMENTS: dict[str, Deployment] = {}
TOKENS: set[str] = set()


def parse_deployments(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, port = item.rpartition(":")
        out.append((name, int(port)))
    return out


def forward(method: str, path: str, body: bytes | None, timeout: float = 300.0) -> tuple[int, bytes, str]:
    """The worker ComfyUI's (status, body, content type) for this request."""
    upstream = urllib.parse.urlsplit(common.env_str("GATEWAY_UPSTREAM", "http://127.0.0.1:8188"))
    conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or "application/json"
    finally:
        conn.close()


class Handler(common.StandinHandler):
    standin = "serverless-gateway"
    quiet_paths = ("/status/", "/history/", "/v1/")
    deployment: Deployment  # set per port

    def do_PATCH(self):
        self._dispatch("PATCH")

    def route(self, method, path, query):
        if path.startswith(API_PREFIX):
            return self.api(method, path[len(API_PREFIX) - 1:])
        key = common.env_str("GATEWAY_API_KEY")
        if key and self.headers.get("Authorization", "") != f"Bearer {key}":
            self.read_body()
            # Verda's gateway answers an unauthorised request 404, exactly like an unknown path
            return self.send_bytes(404, b"404 page not found\n", "text/plain; charset=utf-8")
        dep = self.deployment
        if method == "GET" and path.startswith("/status/"):
            return self.send_json(200, self._execution(path[len("/status/"):], public=True))
        if method == "GET" and path.startswith("/result/"):
            ex = self._execution(path[len("/result/"):])
            if ex["Status"] not in ("Completed", "Failed"):
                raise common.HTTPError(404, {"code": "not_ready", "message": f"execution {ex['Id']} is {ex['Status']}"})
            return self.send_bytes(ex["result_status"], ex["result"], ex["content_type"])
        body = self.read_body() if method == "POST" else None
        full = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        if method == "POST" and "respond-async" in self.headers.get("Prefer", ""):
            exec_id = uuid.uuid4().hex
            with dep.lock:
                dep.executions[exec_id] = {"Id": exec_id, "Status": "Queue", "created": time.time()}
            threading.Thread(target=run_async, args=(dep, exec_id, method, full, body), daemon=True).start()
            return self.send_json(202, {"Id": exec_id})
        waited = dep.wait_for_replica()
        try:
            status, raw, ctype = forward(method, full, body)
        except OSError as exc:
            raise common.HTTPError(502, {"code": "upstream_unreachable", "message": f"replica did not answer: {exc}"})
        self.send_bytes(status, raw, ctype, {"X-Standin-Waited-Ms": str(int(waited * 1000))})

    def _execution(self, exec_id: str, public: bool = False) -> dict:
        with self.deployment.lock:
            ex = self.deployment.executions.get(exec_id)
            if ex is None:
                raise common.HTTPError(404, {"code": "not_found", "message": f"no execution {exec_id}"})
            ex = dict(ex)
        if public:
            return {k: ex[k] for k in ("Id", "Status", "waiting_ms", "running_ms") if k in ex}
        return ex

    # -- the deployment API ----------------------------------------------------------------------
    def api(self, method, path):
        if method == "POST" and path == "/oauth2/token":
            body = self.read_json() or {}
            cid, secret = common.env_str("GATEWAY_CLIENT_ID"), common.env_str("GATEWAY_CLIENT_SECRET")
            if not cid or body.get("client_id") != cid or body.get("client_secret") != secret \
                    or body.get("grant_type") != "client_credentials":
                raise common.HTTPError(401, {"code": "unauthorized_request", "message": "Invalid client credentials"})
            token = secrets.token_hex(16)
            TOKENS.add(token)
            return self.send_json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                                        "scope": "cloud-api-v1"})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in TOKENS:
            raise common.HTTPError(401, {"code": "unauthorized_request", "message": "Invalid or expired token"})
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["container-deployments"] or len(parts) < 2:
            raise common.HTTPError(404, {"code": "not_found", "message": "Not Found"})
        dep = DEPLOYMENTS.get(parts[1])
        if dep is None:
            raise common.HTTPError(404, {"code": "not_found", "message": f"deployment {parts[1]} not found"})
        what = parts[2] if len(parts) > 2 else ""
        if method == "GET" and what == "":
            with dep.lock:
                scaling = json.loads(json.dumps(dep.scaling))
            return self.send_json(200, {"name": dep.name, "endpoint_base_url": f"http://0.0.0.0:{dep.port}",
                                        "is_spot": "spot" in dep.name, "scaling": scaling,
                                        "containers": [{"name": "comfyui", "exposed_port": 8188}]})
        if method == "GET" and what == "status":
            return self.send_json(200, {"status": "healthy"})
        if method == "GET" and what == "replicas":
            return self.send_json(200, {"list": dep.replica_list()})
        if what == "scaling" and method in ("GET", "PATCH"):
            if method == "PATCH":
                self._patch_scaling(dep, self.read_json())
            dep.replica_list()  # apply the new options now
            with dep.lock:
                return self.send_json(200, json.loads(json.dumps(dep.scaling)))
        raise common.HTTPError(404, {"code": "not_found", "message": "Not Found"})

    @staticmethod
    def _patch_scaling(dep: Deployment, body) -> None:
        if not isinstance(body, dict):
            raise common.HTTPError(400, {"code": "invalid_request", "message": "body must be a JSON object"})
        low = body.get("min_replica_count", dep.scaling["min_replica_count"])
        high = body.get("max_replica_count", dep.scaling["max_replica_count"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (low, high)) or low > high:
            raise common.HTTPError(400, {"code": "invalid_request",
                                         "message": "min_replica_count and max_replica_count must be integers, "
                                                    "0 <= min <= max"})
        with dep.lock:
            for key, value in body.items():
                if isinstance(value, dict) and isinstance(dep.scaling.get(key), dict):
                    dep.scaling[key].update(value)
                else:
                    dep.scaling[key] = value


def run_async(dep: Deployment, exec_id: str, method: str, path: str, body: bytes | None) -> None:
    def update(**fields):
        with dep.lock:
            dep.executions[exec_id].update(fields)
    t0 = time.time()
    try:
        waited = dep.wait_for_replica()
        update(Status="Inference", waiting_ms=int(waited * 1000))
        t1 = time.time()
        status, raw, ctype = forward(method, path, body)
        update(Status="Completed" if status < 400 else "Failed", running_ms=int((time.time() - t1) * 1000),
               result_status=status, result=raw, content_type=ctype)
    except common.HTTPError as exc:
        update(Status="Failed", waiting_ms=int((time.time() - t0) * 1000), result_status=exc.status,
               result=json.dumps(exc.body).encode(), content_type="application/json")
    except OSError as exc:
        update(Status="Failed", result_status=502, content_type="application/json",
               result=json.dumps({"code": "upstream_unreachable", "message": str(exc)}).encode())


def main() -> None:
    common.banner("serverless-gateway", "serverless endpoint (Verda's container gateway)")
    host = common.env_str("STANDIN_LISTEN_HOST", "0.0.0.0")
    servers = []
    for name, port in parse_deployments(common.env_str("GATEWAY_DEPLOYMENTS", "lab-deployment:8000")):
        dep = DEPLOYMENTS[name] = Deployment(name, port)
        handler = type(f"Handler_{port}", (Handler,), {"deployment": dep})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        servers.append(server)
        print(f"serverless-gateway: deployment {name} on http://{host}:{port} "
              f"(key {'required' if common.env_str('GATEWAY_API_KEY') else 'NOT required'})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    try:
        servers[0].serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
