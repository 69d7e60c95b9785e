"""The queue manager's HTTP API, as the team's real code declares it (pure parsing, no I/O).

Contract (../shared/comfyume-real/mello-track/queue-manager/: main.py, models.py; the code wins):
- `GET /health` answers 200 even when unhealthy: the verdict is the body's `status` ("healthy" |
  "unhealthy", i.e. Redis answered PING or not) and `redis_connected`; the newer main adds
  `inference_mode`, `active_gpu`, `serverless_endpoint`.
- `POST /api/jobs` {"user_id", "workflow", "priority" (0-3), "metadata"} -> 201 JobResponse (`id`,
  `status`, `worker_id`, `result`, `error`, `position_in_queue`, ...); errors are FastAPI's
  {"detail": "text"} or {"detail": [{"loc", "msg"}, ...]} (422).
- `GET /api/jobs/{id}` -> JobResponse, 404 {"detail": "Job not found"}.
- `DELETE /api/jobs/{id}` -> 204 (a pending job deleted, a running one marked cancelled), 400 for
  a finished one, 404.
- `GET /api/queue/status` -> pending_jobs, running_jobs, completed_jobs, failed_jobs, ...
- The worker's result (what "completed" records): {"prompt_id", "status", "outputs" (ComfyUI's
  history outputs), "execution_time", "output_path", "timestamp"}; in serverless mode the newer
  main answers the submission 201 with status "completed", worker_id "serverless" and result
  {"prompt_id", "number", "node_errors"} and never stores the job.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from . import ParseError, excerpt

HEALTH = "/health"
JOBS = "/api/jobs"
QUEUE_STATUS = "/api/queue/status"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def job_path(job_id: str) -> str:
    return f"{JOBS}/{job_id}"


def _json(body: bytes | str | Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise ParseError("a JSON body", body) from exc
    return body


def message(body: bytes | str | Any) -> str:
    """The service's own message from an error answer: FastAPI's `detail` (text, or the 422 list's
    `loc: msg` items), else the body itself, shortened to one line."""
    try:
        data = _json(body)
    except ParseError:
        data = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
                else:
                    parts.append(str(item))
            return "; ".join(parts)[:300]
        return " ".join(str(detail).split())[:300]
    if isinstance(data, dict) and "error" in data:
        return " ".join(str(data["error"]).split())[:300]
    text = data if isinstance(data, str) else json.dumps(data)
    return " ".join(text.split())[:300]


@dataclasses.dataclass(frozen=True)
class Health:
    ok: bool
    status: str  # the body's own word ("healthy", "unhealthy", or what was seen)
    redis_connected: bool | None
    inference_mode: str | None
    cause: str  # "" when healthy; else the cause in words ("the queue manager lost Redis")
    data: dict


def parse_health(http_status: int, body: bytes | str | Any) -> Health:
    """The body decides, not the status code: 200 with {"status": "unhealthy"} is unhealthy."""
    try:
        data = _json(body)
    except ParseError:
        data = None
    if not isinstance(data, dict) or "status" not in data:
        why = f"HTTP {http_status} with no health body ({excerpt(body, 80)})"
        return Health(False, "", None, None, f"the queue manager answered GET /health with {why}", {})
    word = str(data.get("status"))
    redis_ok = data.get("redis_connected")
    redis_ok = redis_ok if isinstance(redis_ok, bool) else None
    mode = data.get("inference_mode") if isinstance(data.get("inference_mode"), str) else None
    keep = {k: data[k] for k in ("status", "version", "redis_connected", "inference_mode", "active_gpu",
                                 "queue_depth") if k in data}
    if word == "healthy" and redis_ok is not False and 200 <= http_status < 300:
        return Health(True, word, redis_ok, mode, "", keep)
    if redis_ok is False:
        cause = "the queue manager lost Redis (GET /health: status " + f"{word!r}, redis_connected false)"
    elif word != "healthy":
        cause = f"the queue manager says it is {word!r} (GET /health, HTTP {http_status})"
    else:
        cause = f"the queue manager answered GET /health with HTTP {http_status}"
    return Health(False, word, redis_ok, mode, cause, keep)


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    status: str
    worker_id: str | None
    result: Any
    error: str | None
    position: int | None


def parse_job(body: bytes | str | Any) -> Job:
    """A JobResponse (the answer to POST /api/jobs and GET /api/jobs/{id})."""
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or data.get("status") not in STATUSES:
        raise ParseError("a job with an id and a status (pending, running, completed, failed, cancelled)", data)
    result = data.get("result")
    if isinstance(result, str):  # tolerated: a result stored as JSON text
        try:
            result = json.loads(result)
        except ValueError:
            pass
    pos = data.get("position_in_queue")
    return Job(data["id"], data["status"], data.get("worker_id") or None, result,
               data.get("error") or None, pos if isinstance(pos, int) and not isinstance(pos, bool) else None)


def output_files(result: Any) -> tuple[str, ...]:
    """The files a completed job's result names (ComfyUI's history outputs, as the worker records them)."""
    outputs = result.get("outputs") if isinstance(result, dict) else None
    names = []
    for node_output in (outputs or {}).values() if isinstance(outputs, dict) else ():
        for kind in ("images", "gifs", "videos", "audio", "files"):
            items = node_output.get(kind) if isinstance(node_output, dict) else None
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    names.append(item["filename"])
    return tuple(names)


def serverless_accepted(result: Any) -> str | None:
    """The prompt id when a serverless submission's result shows ComfyUI accepted the graph, else None."""
    if not isinstance(result, dict) or not isinstance(result.get("prompt_id"), str):
        return None
    return None if result.get("node_errors") else result["prompt_id"]


def completions(body: bytes | str | Any) -> int | None:
    """completed + failed jobs from GET /api/queue/status (None when unreadable): what progress is."""
    try:
        data = _json(body)
    except ParseError:
        return None
    if not isinstance(data, dict):
        return None
    done = [data.get("completed_jobs"), data.get("failed_jobs")]
    return sum(done) if all(isinstance(n, int) for n in done) else None


def running(body: bytes | str | Any) -> int:
    """running_jobs from GET /api/queue/status (0 when unreadable)."""
    try:
        data = _json(body)
    except ParseError:
        return 0
    n = data.get("running_jobs") if isinstance(data, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else 0
