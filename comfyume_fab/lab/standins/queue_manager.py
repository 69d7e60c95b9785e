"""STAND-IN for the comfyume queue manager (lab only; not the real FastAPI service).

Speaks the WORKING contract of the team's real queue manager (../shared/comfyume-real/mello-track/
queue-manager/: main.py, models.py, redis_client.py; the code wins over the docs) on the same Redis
keys, so a real or stand-in worker and the orchestrator's checks see what they would see in
production. It does NOT reproduce the pinned commits' defects (500 at submission: a datetime the
real one cannot serialise; 422 on the real worker's complete/fail requests): it models the contract
those endpoints declare.

  GET  /health                   ALWAYS 200 (as the real one): the verdict is in the body --
                                 status "healthy" | "unhealthy", redis_connected (a real PING),
                                 version, inference_mode, active_gpu, serverless_endpoint (the newer
                                 main's fields), workers_active (always 0, as upstream), queue_depth
                                 (ZCARD queue:pending, 0 without Redis), uptime_seconds
  GET  /api/queue/status         mode, pending/running/completed/failed_jobs (ZCARDs),
                                 total_workers (NUM_WORKERS), active_workers (always 0, as upstream),
                                 queue_depth
  POST /api/jobs                 {"user_id" ([A-Za-z0-9_-]{1,100}), "workflow" (non-empty object),
                                 "priority" (0-3, default 2), "metadata" ({})} -> 201 JobResponse
                                 (id, user_id, status "pending", priority, created_at, started_at,
                                 completed_at, worker_id, result, error, position_in_queue,
                                 estimated_wait_time); 422 on a bad body, 429 when queue:pending holds
                                 MAX_QUEUE_DEPTH (100) jobs. Stored as upstream: job:{id} (the Job as
                                 JSON), queue:pending (score priority*1e6 + created_at), user:{u}:jobs (a set).
                                 INFERENCE_MODE=serverless: posted to {SERVERLESS_ENDPOINT}/prompt and
                                 answered 201 status "completed", worker_id "serverless", result
                                 {"prompt_id", "number", "node_errors"}, never stored (the newer main).
                                 The endpoint is the active tier's SERVERLESS_ENDPOINT_<TIER> (the four
                                 tiers that queue manager knows), else SERVERLESS_ENDPOINT, called with
                                 Authorization: Bearer SERVERLESS_API_KEY; errors: the endpoint's 4xx/5xx
                                 with httpx's "Client error '404 Not Found' for url ..." text, 502
                                 "Serverless error: All connection attempts failed", 503 "Serverless
                                 client not initialized. Check SERVERLESS_ENDPOINT."
  GET  /api/jobs?user_id=&status=&limit=
                                 [JobResponse]: a user's jobs (user:{u}:jobs) or, without user_id, the
                                 first `limit` (100) pending jobs only, as upstream; filtered by status
  GET  /api/jobs/{id}            JobResponse (position_in_queue while pending); 404 {"detail": "Job not found"}
  DELETE /api/jobs/{id}          204: a pending job is deleted everywhere, a running one marked
                                 cancelled; 400 "Cannot cancel job in <status> state" otherwise; 404
  GET  /api/workers/next-job?worker_id=X
                                 SETEX worker:X:heartbeat WORKER_HEARTBEAT_TIMEOUT <ISO time> (the only
                                 real liveness signal, refreshed only here), ZPOPMIN queue:pending ->
                                 {"job": null} or {"job": {"id", "workflow", "user_id", "metadata"}}
                                 (status running, started_at, worker_id; ZADD queue:running)
  POST /api/workers/complete-job?job_id=X  body {"result": {...}} -> queue:completed, user:{u}:completed +1
  POST /api/workers/fail-job?job_id=X      body {"error": "..."}  -> queue:failed
                                 -> {"status": "success", "job_id"}; 422 without job_id or with
                                 another body shape; 404 for an unknown job

Env: QUEUE_MANAGER_LISTEN_PORT (3000), REDIS_HOST (redis), REDIS_PORT (6379), REDIS_PASSWORD,
INFERENCE_MODE (local|redis|serverless), SERVERLESS_ACTIVE, SERVERLESS_ENDPOINT_H200_SPOT (and the other
three tiers), SERVERLESS_ENDPOINT, SERVERLESS_API_KEY, QUEUE_MODE (fifo),
WORKER_HEARTBEAT_TIMEOUT (60), NUM_WORKERS (1), MAX_QUEUE_DEPTH (100). A Redis error on an API
route answers 500 {"detail": ...} (as upstream); it never stops the server.
"""
from __future__ import annotations

import datetime
import json
import re
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
# The team's newer queue manager knows exactly these four tiers; any other SERVERLESS_ACTIVE uses the fallback.
TIER_ENDPOINTS = {tier: common.env_str("SERVERLESS_ENDPOINT_" + tier.upper().replace("-", "_"))
                  for tier in GPU_TYPES}
ENDPOINT = TIER_ENDPOINTS.get(ACTIVE) or common.env_str("SERVERLESS_ENDPOINT")
ACTIVE_GPU = GPU_TYPES[ACTIVE] if TIER_ENDPOINTS.get(ACTIVE) else "serverless"
API_KEY = common.env_str("SERVERLESS_API_KEY")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
USER_ID = re.compile(r"^[a-zA-Z0-9_-]{1,100}$")
RESPONSE_FIELDS = ("id", "user_id", "status", "priority", "created_at", "started_at", "completed_at",
                   "worker_id", "result", "error")

# One immediate retry, as the real queue manager's redis-py 7 client retries by default: after Redis
# was recreated, a pooled connection to the old server fails once and the command goes over a new
# one (without it, a worker's complete-job right after a Redis restart was lost). No back-off: a
# dead Redis still turns /health into a quick "unhealthy", not a slow answer.
REDIS = redis.Redis(host=common.env_str("REDIS_HOST", "redis"), port=common.env_int("REDIS_PORT", 6379),
                    password=common.env_str("REDIS_PASSWORD") or None, socket_timeout=3,
                    socket_connect_timeout=3, decode_responses=True, retry=Retry(NoBackoff(), 1))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso(when: datetime.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")  # pydantic's JSON form of an aware UTC datetime


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


def unprocessable(where: tuple, msg: str, kind: str = "value_error"):
    """FastAPI's 422 body for a request that does not match the declared model."""
    return common.HTTPError(422, {"detail": [{"type": kind, "loc": list(where), "msg": msg}]})


def publish(event: str, job: dict) -> None:
    REDIS.publish("queue:updates", json.dumps({"type": event, "data": job, "timestamp": iso(now())}))


def load(job_id: str) -> dict | None:
    raw = REDIS.get(f"job:{job_id}") if job_id else None
    return json.loads(raw) if raw else None


def store(job: dict, event: str = "job_updated") -> None:
    REDIS.set(f"job:{job['id']}", json.dumps(job))
    publish(event, job)


def position(job_id: str) -> int | None:
    ids = REDIS.zrange("queue:pending", 0, 99)
    return ids.index(job_id) if job_id in ids else None


def response(job: dict) -> dict:
    out = {key: job.get(key) for key in RESPONSE_FIELDS}
    out["position_in_queue"] = position(job["id"]) if job.get("status") == "pending" else None
    out["estimated_wait_time"] = None
    return out


def submit_request(body) -> dict:
    """The JobSubmitRequest model: its fields and validators (422 on anything else)."""
    if not isinstance(body, dict):
        raise unprocessable(("body",), "Input should be a valid dictionary", "dict_type")
    user_id, workflow = body.get("user_id"), body.get("workflow")
    if not isinstance(user_id, str) or not USER_ID.match(user_id):
        raise unprocessable(("body", "user_id"), "Value error, user_id must contain only alphanumeric characters, "
                            "underscores, and hyphens (1-100 chars)")
    if not isinstance(workflow, dict) or not workflow:
        raise unprocessable(("body", "workflow"), "Value error, workflow must be a non-empty dictionary")
    priority = body.get("priority", 2)
    if priority not in (0, 1, 2, 3) or isinstance(priority, bool):
        raise unprocessable(("body", "priority"), "Input should be 0, 1, 2 or 3", "enum")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise unprocessable(("body", "metadata"), "Input should be a valid dictionary", "dict_type")
    return {"user_id": user_id, "workflow": workflow, "priority": priority, "metadata": metadata}


def create_job(request: dict) -> dict:
    created = now()
    job = {"id": str(uuid.uuid4()), **request, "status": "pending", "created_at": iso(created),
           "started_at": None, "completed_at": None, "worker_id": None, "result": None, "error": None}
    store(job, "job_created")
    REDIS.zadd("queue:pending", {job["id"]: request["priority"] * 1_000_000 + created.timestamp()})
    REDIS.sadd(f"user:{job['user_id']}:jobs", job["id"])
    return job


def list_jobs(query: dict) -> list[dict]:
    """GET /api/jobs as upstream's list_jobs: a user's jobs (user:{u}:jobs) with user_id, else the
    first `limit` pending jobs only (upstream's "TODO: Add running, completed, failed"), filtered by
    status, at most `limit` (default 100); 422 for a status or limit the models refuse."""
    status, user_id, limit = query.get("status"), query.get("user_id"), query.get("limit", "100")
    if status is not None and status not in ("pending", "running", "completed", "failed", "cancelled"):
        raise unprocessable(("query", "status"), "Input should be 'pending', 'running', 'completed', 'failed' "
                                                 "or 'cancelled'", "enum")
    try:
        limit = int(limit)
    except ValueError:
        raise unprocessable(("query", "limit"), "Input should be a valid integer, unable to parse string as an "
                                                "integer", "int_parsing") from None
    ids = sorted(REDIS.smembers(f"user:{user_id}:jobs")) if user_id else REDIS.zrange("queue:pending", 0, limit - 1)
    jobs = [job for job in (load(i) for i in ids) if job is not None]
    if status:
        jobs = [job for job in jobs if job.get("status") == status]
    return [response(job) for job in jobs[:max(0, limit)]]


def delete_job(job: dict) -> None:
    for name in QUEUES:
        REDIS.zrem(f"queue:{name}", job["id"])
    REDIS.srem(f"user:{job['user_id']}:jobs", job["id"])
    REDIS.delete(f"job:{job['id']}")
    publish("job_deleted", {"job_id": job["id"]})


def next_job(worker_id: str):
    REDIS.set(f"worker:{worker_id}:heartbeat", iso(now()), ex=HEARTBEAT_TIMEOUT)
    while True:
        popped = REDIS.zpopmin("queue:pending")
        if not popped:
            return None
        job = load(popped[0][0])
        if job is None:  # the job is gone (deleted by hand): skip the dangling id
            continue
        job.update(status="running", started_at=iso(now()), worker_id=worker_id)
        store(job)
        REDIS.zadd("queue:running", {job["id"]: time.time()})
        return {"id": job["id"], "workflow": job["workflow"], "user_id": job["user_id"],
                "metadata": job.get("metadata") or {}}


def finish_job(job_id: str, status: str, field: str, value) -> bool:
    job = load(job_id)
    if job is None:
        return False
    job.update({"status": status, "completed_at": iso(now()), field: value})
    store(job)
    REDIS.zrem("queue:running", job_id)
    REDIS.zadd(f"queue:{status}", {job_id: time.time()})
    if status == "completed":
        REDIS.incr(f"user:{job['user_id']}:completed")
    return True


def submit_serverless(request: dict) -> dict:
    """The newer main: the graph goes to the endpoint; 201 "completed" once ComfyUI accepted it;
    the job is never stored (GET /api/jobs/{id} then answers 404)."""
    if not ENDPOINT:
        raise common.HTTPError(503, {"detail": "Serverless client not initialized. Check SERVERLESS_ENDPOINT."})
    url = ENDPOINT.rstrip("/") + "/prompt"
    body = json.dumps({"prompt": request["workflow"], "client_id": request["user_id"]}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {API_KEY}"} if API_KEY else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers=headers),
                                    timeout=300) as response:
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
    stamp = iso(now())
    return {"id": str(uuid.uuid4()), "user_id": request["user_id"], "status": "completed",
            "priority": request["priority"], "created_at": stamp, "started_at": stamp, "completed_at": stamp,
            "worker_id": "serverless", "result": result, "error": None, "position_in_queue": None,
            "estimated_wait_time": None}


class Handler(common.StandinHandler):
    standin = "queue-manager"

    def route(self, method, path, query):
        if method == "GET" and path == "/health":
            return self.health()
        try:
            return self.api(method, path, query)
        except (redis.RedisError, OSError) as exc:
            raise common.HTTPError(500, {"detail": str(exc)}) from exc

    def health(self):
        ok = redis_ok()
        depth = 0
        if ok:
            try:
                depth = REDIS.zcard("queue:pending")
            except (redis.RedisError, OSError):
                ok = False
        self.send_json(200, {
            "status": "healthy" if ok else "unhealthy", "version": VERSION, "inference_mode": MODE,
            "active_gpu": "local" if MODE != "serverless" else ACTIVE_GPU,
            "serverless_endpoint": endpoint_display(), "redis_connected": ok, "workers_active": 0,
            "queue_depth": depth, "uptime_seconds": int(time.time() - START)})

    def api(self, method, path, query):
        if method == "GET" and path == "/api/queue/status":
            counts = {name: REDIS.zcard(f"queue:{name}") for name in QUEUES}
            return self.send_json(200, {
                "mode": common.env_str("QUEUE_MODE", "fifo"), "pending_jobs": counts["pending"],
                "running_jobs": counts["running"], "completed_jobs": counts["completed"],
                "failed_jobs": counts["failed"], "total_workers": common.env_int("NUM_WORKERS", 1),
                "active_workers": 0, "queue_depth": counts["pending"]})
        if method == "GET" and path == "/api/workers/next-job":
            worker_id = query.get("worker_id", "")
            if not worker_id:
                raise unprocessable(("query", "worker_id"), "Field required", "missing")
            return self.send_json(200, {"job": next_job(worker_id)})
        if method == "POST" and path == "/api/jobs":
            request = submit_request(self.read_json())
            if MODE == "serverless":
                return self.send_json(201, submit_serverless(request))
            limit = common.env_int("MAX_QUEUE_DEPTH", 100)
            if limit > 0 and REDIS.zcard("queue:pending") >= limit:
                raise common.HTTPError(429, {"detail": f"Queue is full (max depth: {limit})"})
            return self.send_json(201, response(create_job(request)))
        if method == "GET" and path == "/api/jobs":
            return self.send_json(200, list_jobs(query))
        if path.startswith("/api/jobs/") and method in ("GET", "DELETE"):
            job = load(path[len("/api/jobs/"):])
            if job is None:
                raise common.HTTPError(404, {"detail": "Job not found"})
            if method == "GET":
                return self.send_json(200, response(job))
            if job["status"] == "running":
                job["status"] = "cancelled"
                store(job)
            elif job["status"] == "pending":
                delete_job(job)
            else:
                raise common.HTTPError(400, {"detail": f"Cannot cancel job in {job['status']} state"})
            return self.send_bytes(204, b"", "application/json")
        if method == "POST" and path in ("/api/workers/complete-job", "/api/workers/fail-job"):
            job_id = query.get("job_id", "")
            if not job_id:
                raise unprocessable(("query", "job_id"), "Field required", "missing")
            body = self.read_json()
            done = path.endswith("complete-job")
            field = "result" if done else "error"
            value = body.get(field) if isinstance(body, dict) else None
            if done and not isinstance(value, dict):
                raise unprocessable(("body", "result"), "Field required: {\"result\": {...}}", "missing")
            if not done and not (isinstance(value, str) and value.strip()):
                raise unprocessable(("body", "error"), "Field required: {\"error\": \"...\"}", "missing")
            if not finish_job(job_id, "completed" if done else "failed", field,
                              value if done else value.strip()):
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
