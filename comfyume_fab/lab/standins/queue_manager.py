"""STAND-IN for the comfyume queue manager (lab only; not the real FastAPI service).

Follows the real queue-manager contract (docs/comfyume-system.md) on the same Redis keys, so a
real or stand-in worker and the orchestrator's checks see what they would see in production:

  GET  /health                   status, version, inference_mode, active_gpu, serverless_endpoint,
                                 redis_connected (a real PING), workers_active (always 0, as
                                 upstream), queue_depth (ZCARD queue:pending), uptime_seconds;
                                 200 "healthy", or 503 "unhealthy" when Redis does not answer
  GET  /api/queue/status         mode, pending/running/completed/failed_jobs (ZCARDs),
                                 total_workers (NUM_WORKERS), active_workers (worker:*:heartbeat keys),
                                 queue_depth
  GET  /api/workers/next-job?worker_id=X
                                 SET worker:X:heartbeat <time> EX WORKER_HEARTBEAT_TIMEOUT (the only
                                 real liveness signal), ZPOPMIN queue:pending -> {"job": null} or
                                 {"job": {"id", "user_id", "workflow"}} (moved to queue:running)
  POST /api/jobs                 {"user_id", "workflow"} -> 201 {"job_id", "id", "status", "user_id"}
                                 (INFERENCE_MODE=serverless: {"prompt", "client_id"} is posted to
                                 <endpoint>/prompt with Authorization: Bearer SERVERLESS_API_KEY, and
                                 answered 201 "completed" with worker_id "serverless" and ComfyUI's
                                 answer as result as soon as ComfyUI accepted it; the job is never
                                 stored, as the team's newer queue manager does. The endpoint is the
                                 active tier's SERVERLESS_ENDPOINT_<TIER> (the four tiers that queue
                                 manager knows), else SERVERLESS_ENDPOINT; errors: the endpoint's
                                 4xx/5xx with httpx's "Client error '404 Not Found' for url ..." text,
                                 502 "Serverless error: All connection attempts failed", 503
                                 "Serverless client not initialized. Check SERVERLESS_ENDPOINT.")
  GET  /api/jobs/{id}            the job hash job:{id} (fields as stored, strings) plus "id"
  POST /api/workers/complete-job {"job_id", "worker_id", "result"} -> queue:completed
  POST /api/workers/fail-job     {"job_id", "worker_id", "error"}  -> queue:failed
                                 (job_id may also be a query parameter, as upstream takes it)

Env: QUEUE_MANAGER_LISTEN_PORT (3000), REDIS_HOST (redis), REDIS_PORT (6379), REDIS_PASSWORD,
INFERENCE_MODE (local|redis|serverless), SERVERLESS_ACTIVE, SERVERLESS_ENDPOINT_H200_SPOT (and the other
three tiers), SERVERLESS_ENDPOINT, SERVERLESS_API_KEY, QUEUE_MODE (fifo),
WORKER_HEARTBEAT_TIMEOUT (60), NUM_WORKERS (1). Redis errors answer 503; they never stop the server.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

try:
    from . import common
except ImportError:  # run as a script inside the stand-in container
    import common

VERSION = "0.1.0-standin"
GPU_TYPES = {"h200-spot": "H200-141GB-SPOT", "h200-on-demand": "H200-141GB",
             "b300-spot": "B300-288GB-SPOT", "b300-on-demand": "B300-288GB"}
QUEUES = ("pending", "running", "completed", "failed")
START = time.time()
MODE = common.env_str("INFERENCE_MODE", "local")
HEARTBEAT_TIMEOUT = common.env_int("WORKER_HEARTBEAT_TIMEOUT", 60)
ACTIVE = common.env_str("SERVERLESS_ACTIVE", "default")
# The team's queue manager knows exactly these four tiers; any other SERVERLESS_ACTIVE uses the fallback.
TIER_ENDPOINTS = {tier: common.env_str("SERVERLESS_ENDPOINT_" + tier.upper().replace("-", "_"))
                  for tier in GPU_TYPES}
ENDPOINT = TIER_ENDPOINTS.get(ACTIVE) or common.env_str("SERVERLESS_ENDPOINT")
ACTIVE_GPU = GPU_TYPES[ACTIVE] if TIER_ENDPOINTS.get(ACTIVE) else "serverless"
API_KEY = common.env_str("SERVERLESS_API_KEY")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}

# No client-side retries (redis-py >= 6 retries with back-off by default; 4.3 does not): a dead
# Redis must turn /health into a quick 503, not a slow answer.
REDIS = redis.Redis(host=common.env_str("REDIS_HOST", "redis"), port=common.env_int("REDIS_PORT", 6379),
                    password=common.env_str("REDIS_PASSWORD") or None, socket_timeout=3,
                    socket_connect_timeout=3, decode_responses=True, retry=Retry(NoBackoff(), 0))


def redis_ok() -> bool:
    try:
        return bool(REDIS.ping())
    except (redis.RedisError, OSError):
        return False


def endpoint_display() -> str | None:
    """The deployment name only, never the full URL (as upstream redacts it)."""
    if MODE != "serverless" or not ENDPOINT:
        return None
    return ENDPOINT.split("//")[-1].split(".")[0] if "//" in ENDPOINT else ENDPOINT


def publish(event: str, job_id: str) -> None:
    REDIS.publish("queue:updates", json.dumps({"event": event, "job_id": job_id, "timestamp": time.time()}))


def create_job(user_id: str, workflow) -> str:
    job_id = str(uuid.uuid4())
    now = time.time()
    REDIS.hset(f"job:{job_id}", mapping={
        "user_id": user_id, "workflow": json.dumps(workflow), "status": "pending",
        "created_at": repr(now), "worker_id": ""})
    REDIS.zadd("queue:pending", {job_id: now})
    REDIS.zadd(f"user:{user_id}:jobs", {job_id: now})
    publish("job_submitted", job_id)
    return job_id


def next_job(worker_id: str):
    REDIS.set(f"worker:{worker_id}:heartbeat", repr(time.time()), ex=HEARTBEAT_TIMEOUT)
    while True:
        popped = REDIS.zpopmin("queue:pending")
        if not popped:
            return None
        job_id = popped[0][0]
        job = REDIS.hgetall(f"job:{job_id}")
        if not job:  # the hash is gone (deleted by hand): skip the dangling id
            continue
        REDIS.hset(f"job:{job_id}", mapping={"status": "running", "worker_id": worker_id,
                                             "started_at": repr(time.time())})
        REDIS.zadd("queue:running", {job_id: time.time()})
        publish("job_started", job_id)
        try:
            workflow = json.loads(job.get("workflow") or "null")
        except ValueError:
            workflow = job.get("workflow")
        return {"id": job_id, "user_id": job.get("user_id", ""), "workflow": workflow}


def finish_job(job_id: str, worker_id: str, status: str, field: str, value) -> bool:
    key = f"job:{job_id}"
    if not REDIS.hgetall(key):
        return False
    REDIS.hset(key, mapping={"status": status, "worker_id": worker_id or "",
                             field: value if isinstance(value, str) else json.dumps(value),
                             "completed_at": repr(time.time())})
    REDIS.zrem("queue:running", job_id)
    REDIS.zrem("queue:pending", job_id)
    REDIS.zadd(f"queue:{status}", {job_id: time.time()})
    publish(f"job_{status}", job_id)
    return True


def submit_serverless(user_id: str, workflow) -> dict:
    if not ENDPOINT:
        raise common.HTTPError(503, {"detail": "Serverless client not initialized. Check SERVERLESS_ENDPOINT."})
    url = ENDPOINT.rstrip("/") + "/prompt"
    request = urllib.request.Request(url, data=json.dumps({"prompt": workflow, "client_id": user_id}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             **({"Authorization": f"Bearer {API_KEY}"}
                                                                if API_KEY else {})})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:  # httpx's raise_for_status() text, passed on with its status
        kind = "Client error" if exc.code < 500 else "Server error"
        reason = REASONS.get(exc.code, exc.reason)
        raise common.HTTPError(exc.code, {"detail": (
            f"{kind} '{exc.code} {reason}' for url '{url}'\nFor more information check: "
            f"https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/{exc.code}")})
    except Exception:  # noqa: BLE001 - no answer at all: httpx's ConnectError text, as upstream
        raise common.HTTPError(502, {"detail": "Serverless error: All connection attempts failed"})
    result = json.loads(raw) if raw.strip() else None
    job_id = str(uuid.uuid4())  # never stored: GET /api/jobs/{id} answers 404, queue counts stay 0
    return {"job_id": job_id, "id": job_id, "status": "completed", "user_id": user_id,
            "worker_id": "serverless", "result": result}


class Handler(common.StandinHandler):
    standin = "queue-manager"

    def route(self, method, path, query):
        if method == "GET" and path == "/health":
            return self.health()
        try:
            return self.api(method, path, query)
        except (redis.RedisError, OSError) as exc:
            raise common.HTTPError(503, {"detail": f"redis unavailable: {exc}"}) from exc

    def health(self):
        ok = redis_ok()
        depth = None
        if ok:
            try:
                depth = REDIS.zcard("queue:pending")
            except (redis.RedisError, OSError):
                ok = False
        self.send_json(200 if ok else 503, {
            "status": "healthy" if ok else "unhealthy", "version": VERSION, "inference_mode": MODE,
            "active_gpu": "local" if MODE != "serverless" else ACTIVE_GPU,
            "serverless_endpoint": endpoint_display(), "redis_connected": ok, "workers_active": 0,
            "queue_depth": depth if ok else 0, "uptime_seconds": int(time.time() - START)})

    def api(self, method, path, query):
        if method == "GET" and path == "/api/queue/status":
            counts = {name: REDIS.zcard(f"queue:{name}") for name in QUEUES}
            active = sum(1 for _ in REDIS.scan_iter(match="worker:*:heartbeat", count=100))
            return self.send_json(200, {
                "mode": common.env_str("QUEUE_MODE", "fifo"), "pending_jobs": counts["pending"],
                "running_jobs": counts["running"], "completed_jobs": counts["completed"],
                "failed_jobs": counts["failed"], "total_workers": common.env_int("NUM_WORKERS", 1),
                "active_workers": active, "queue_depth": counts["pending"]})
        if method == "GET" and path == "/api/workers/next-job":
            worker_id = query.get("worker_id", "").strip()
            if not worker_id:
                raise common.HTTPError(400, {"detail": "worker_id query parameter is required"})
            return self.send_json(200, {"job": next_job(worker_id)})
        if method == "POST" and path == "/api/jobs":
            body = self.read_json()
            if not isinstance(body, dict) or not body.get("user_id") or body.get("workflow") is None:
                raise common.HTTPError(400, {"detail": "body must be {\"user_id\": ..., \"workflow\": {...}}"})
            user_id = str(body["user_id"])
            if MODE == "serverless":
                return self.send_json(201, submit_serverless(user_id, body["workflow"]))
            job_id = create_job(user_id, body["workflow"])
            return self.send_json(201, {"job_id": job_id, "id": job_id, "status": "pending", "user_id": user_id})
        if method == "GET" and path.startswith("/api/jobs/"):
            job_id = path[len("/api/jobs/"):]
            job = REDIS.hgetall(f"job:{job_id}") if job_id else {}
            if not job:
                raise common.HTTPError(404, {"detail": "Job not found"})
            return self.send_json(200, {"id": job_id, **job})
        if method == "POST" and path in ("/api/workers/complete-job", "/api/workers/fail-job"):
            body = self.read_json() or {}
            if not isinstance(body, dict):
                raise common.HTTPError(400, {"detail": "body must be a JSON object"})
            job_id = str(body.get("job_id") or query.get("job_id") or "")
            if not job_id:
                raise common.HTTPError(400, {"detail": "job_id is required"})
            worker_id = str(body.get("worker_id") or query.get("worker_id") or "")
            done = path.endswith("complete-job")
            field, value = ("result", body.get("result")) if done else ("error", body.get("error") or "")
            if not finish_job(job_id, worker_id, "completed" if done else "failed", field, value):
                raise common.HTTPError(404, {"detail": "Job not found"})
            return self.send_json(200, {"status": "success", "job_id": job_id})
        raise common.HTTPError(404, {"detail": "Not Found"})


def main() -> None:
    common.banner("queue-manager", "queue manager")
    common.log(f"queue-manager: INFERENCE_MODE={MODE} redis={REDIS.connection_pool.connection_kwargs.get('host')}:"
               f"{REDIS.connection_pool.connection_kwargs.get('port')} reachable={redis_ok()}")
    common.serve(Handler, common.env_int("QUEUE_MANAGER_LISTEN_PORT", 3000))


if __name__ == "__main__":
    main()
