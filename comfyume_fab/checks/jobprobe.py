"""The job probe: a user's path through the queue manager, proven end to end.

It submits a tiny fresh graph the way a frontend does (`POST /api/jobs` as the reserved user
`comfyume-fab-probe`, at the LOW priority so users never wait behind it), follows it with `GET
/api/jobs/{id}` until a worker has taken and completed it, and proves the result names an output
file. Where it stopped is said in ONE sentence (`stage`):

  rejected        users' jobs fail at submission (the answer's HTTP status and the service's message)
  not-taken       the job waited and no worker took it
  not-completed   a worker took it but it did not complete (failed, lost, or too slow)
  no-output       it completed but its result names no output file
  completed       it completed with output (ok)
  queued-progress it waited behind users' jobs while the queue made progress (ok: a busy workshop)
  skipped         not run (every worker stopped on purpose)

It never leaves its job behind: on giving up it cancels it (`DELETE /api/jobs/{id}`) and says if
that failed; a finished job, which the queue manager's API cannot delete, is removed from Redis by
the `cleanup` callable the caller gives (job:{id}, the queues, the probe user's keys). In serverless
mode the queue manager answers the submission 201 "completed" at once (the newer main): the probe
then proves the queue manager -> serverless endpoint path by the accepted prompt.

HTTP goes through a `call(method, path, body) -> (status, body bytes)` so the same loop runs over an
SSH tunnel from the app host (`job_probe`) or against a local server.
"""
from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from typing import Any, Callable, Mapping

from ..errors import TunnelError
from ..host.facts import ParseError, excerpt
from ..host.facts import queue_manager as qm
from ..host.ssh.remote import Remote
from .links import http_via
from .probe import fresh_graph
from .result import CheckResult

PROBE_USER = "comfyume-fab-probe"
LOW_PRIORITY = 3  # JobPriority.LOW: in fifo/priority modes every user's job goes first
NAME = "job-probe"
STAGES = ("rejected", "not-taken", "not-completed", "no-output", "completed", "queued-progress", "skipped")
CLEANUP_S = 5.0

Call = Callable[[str, str, Any], "tuple[int, bytes]"]


def result(stage: str, detail: str, host: str | None, *, http_status: int | None = None, message: str = "",
           job_id: str | None = None, took: float = 0.0, warning: bool = False, **data) -> CheckResult:
    """The check entry: ok for completed/queued-progress (and skipped, as a warning)."""
    assert stage in STAGES, stage
    ok = stage in ("completed", "queued-progress", "skipped")
    return CheckResult(NAME, ok, detail, took, host, warning=warning or stage == "skipped",
                       data={"stage": stage, "http_status": http_status, "message": message, "job_id": job_id,
                             **data})


def rejected_sentence(http_status: int | None, message: str, where: str) -> str:
    if http_status is None:
        return f"users' jobs fail at submission: the queue manager {where} is not reachable: {message}"
    return f"users' jobs fail at submission: the queue manager answered {http_status}: {message}"


def not_taken_sentence(job_id: str, waited: float, ahead: int, completed: int) -> str:
    if ahead <= 0:
        return (f"users' jobs are never taken: the probe job {job_id[:8]} waited {waited:.0f} s with nothing ahead "
                "of it and no worker took it (is a worker polling the queue manager? see the heartbeat checks)")
    return (f"users' jobs are not moving: the probe job {job_id[:8]} waited {waited:.0f} s behind {ahead} job(s) "
            f"and {'no job' if not completed else f'only {completed} job(s)'} completed meanwhile")


def not_completed_sentence(job: qm.Job | None, job_id: str, waited: float, lost: bool = False) -> str:
    if lost:
        return (f"users' jobs are lost: the queue manager accepted the probe job {job_id[:8]} but then answered "
                "404 for it (no queue holds it)")
    who = (job.worker_id if job and job.worker_id else "a worker")
    if job is not None and job.status == "failed":
        return f"users' jobs are taken but fail: {who} took the probe job {job_id[:8]} and reported: {job.error}"
    if job is not None and job.status == "cancelled":
        return f"users' jobs are taken but not completed: the probe job {job_id[:8]} was cancelled by someone else"
    return (f"users' jobs are taken but not completed: {who} took the probe job {job_id[:8]} and it did not "
            f"complete within {waited:.0f} s")


def no_output_sentence(job: qm.Job) -> str:
    return (f"users' jobs complete without output: {job.worker_id or 'a worker'} completed the probe job "
            f"{job.id[:8]} but its result names no output file ({excerpt(job.result, 100)})")


def completed_sentence(job: qm.Job, files: tuple[str, ...], took: float, ahead: int = 0) -> str:
    behind = f" behind {ahead} job(s)" if ahead else ""
    return (f"a user's job completes: {job.worker_id or 'a worker'} took the probe job {job.id[:8]} from the queue "
            f"manager{behind} and completed it with {len(files)} output file(s) ({files[0]}) in {took:.2f} s")


def progress_sentence(ahead: int, completed: int, waited: float, busy_text: str = "") -> str:
    how = (f"{completed} job(s) completed while the probe waited {waited:.0f} s" if completed else busy_text)
    return f"queued behind {ahead} jobs, making progress ({how}); the probe job was withdrawn so users go first"


def run_job_probe(call: Call, where: str, host: str | None, timeout: float, user_graph: Mapping | None = None,
                  cleanup: Callable[[str], str] | None = None, poll: float = 0.25) -> CheckResult:
    """Submit, follow, prove; one CheckResult named `job-probe` (see the module doc)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    graph, _ = fresh_graph(user_graph, random.Random())
    body = {"user_id": PROBE_USER, "workflow": graph, "priority": LOW_PRIORITY,
            "metadata": {"source": "comfyume-fab job probe", "estimated_vram": 256,
                         "probe_id": uuid.uuid4().hex[:12]}}
    took = lambda: time.monotonic() - t0  # noqa: E731
    try:
        status, raw = call("POST", qm.JOBS, body)
    except TunnelError as exc:
        return result("rejected", rejected_sentence(None, exc.cause, where), host, message=exc.cause, took=took())
    except (OSError, http.client.HTTPException) as exc:
        text = str(exc) or type(exc).__name__
        return result("rejected", f"users' jobs fail at submission: the queue manager {where} gave no answer "
                      f"to POST /api/jobs ({text})", host, message=text, took=took())
    if status not in (200, 201):
        msg = qm.message(raw)
        # The pinned real queue manager stores the job before it fails to answer (500): sweep the probe
        # user's jobs so nothing is left for a worker to take.
        swept = _cleanup(cleanup, None) if status >= 500 else ""
        return result("rejected", rejected_sentence(status, msg, where) + swept, host, http_status=status,
                      message=msg, took=took())
    try:
        job = qm.parse_job(raw)
    except ParseError as exc:
        return result("rejected", f"users' jobs fail at submission: the queue manager answered {status} but not "
                      f"with a job: {exc}", host, http_status=status, message=qm.message(raw), took=took())
    job_id = job.id
    if job.status == "completed" and job.worker_id == "serverless":
        prompt = qm.serverless_accepted(job.result)
        if prompt is None:
            return result("no-output", f"users' jobs reach the serverless endpoint but ComfyUI did not accept the "
                          f"graph: {excerpt(job.result, 120)}", host, http_status=status, job_id=job_id, took=took())
        return result("completed", f"a user's job reaches ComfyUI: the queue manager passed the probe job to the "
                      f"serverless endpoint, which accepted it as prompt {prompt[:8]} in {took():.2f} s (serverless "
                      "mode records no output)", host, http_status=status, job_id=job_id, took=took(),
                      prompt_id=prompt, serverless=True)
    return _follow(call, where, host, job, status, deadline, t0, cleanup, poll)


def _follow(call: Call, where, host, job: qm.Job, submit_status: int, deadline: float, t0: float,
            cleanup, poll: float) -> CheckResult:
    job_id = job.id
    first, running = _queue_counts(call)
    ahead_max = 0
    taken = False
    last = job
    pause = 0.02
    http_status = submit_status
    last_done = first
    while True:
        if last.status == "pending":
            ahead_max = max(ahead_max, (last.position or 0) + running)
        elif last.status in ("running", "completed", "failed", "cancelled"):
            taken = True
        if last.status == "completed":
            files = qm.output_files(last.result)
            done = _cleanup(cleanup, job_id)
            if not files:
                return result("no-output", no_output_sentence(last) + done, host, http_status=http_status,
                              job_id=job_id, took=time.monotonic() - t0, worker_id=last.worker_id)
            return result("completed", completed_sentence(last, files, time.monotonic() - t0, ahead_max) + done,
                          host, http_status=http_status, job_id=job_id, took=time.monotonic() - t0,
                          worker_id=last.worker_id, outputs=list(files), queued_behind=ahead_max)
        if last.status in ("failed", "cancelled"):
            done = _cleanup(cleanup, job_id)
            return result("not-completed", not_completed_sentence(last, job_id, time.monotonic() - t0) + done, host,
                          http_status=http_status, message=last.error or "", job_id=job_id,
                          took=time.monotonic() - t0, worker_id=last.worker_id)
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(pause, max(0.0, deadline - now)))
        pause = min(poll, pause * 2)
        if last.status == "pending":
            done_now, running = _queue_counts(call)
            if done_now is not None and last_done is not None and done_now > last_done:
                last_done = done_now
        try:
            status, raw = call("GET", qm.job_path(job_id), None)
        except (TunnelError, OSError, http.client.HTTPException) as exc:
            cause = exc.cause if isinstance(exc, TunnelError) else (str(exc) or type(exc).__name__)
            withdrawn = _withdraw(call, job_id, cleanup)
            return result("not-completed", f"users' jobs cannot be followed: the queue manager {where} stopped "
                          f"answering while the probe job {job_id[:8]} was {last.status} ({cause}){withdrawn}", host,
                          message=cause, job_id=job_id, took=time.monotonic() - t0)
        if status == 404:
            done = _cleanup(cleanup, job_id)
            return result("not-completed", not_completed_sentence(last, job_id, 0, lost=True) + done, host,
                          http_status=status, message=qm.message(raw), job_id=job_id, took=time.monotonic() - t0)
        if status != 200:
            msg = qm.message(raw)
            withdrawn = _withdraw(call, job_id, cleanup)
            return result("not-completed", f"users' jobs cannot be followed: the queue manager answered {status} to "
                          f"GET /api/jobs/{job_id[:8]}: {msg}{withdrawn}", host, http_status=status, message=msg,
                          job_id=job_id, took=time.monotonic() - t0)
        try:
            last = qm.parse_job(raw)
        except ParseError as exc:
            withdrawn = _withdraw(call, job_id, cleanup)
            return result("not-completed", f"users' jobs cannot be followed: GET /api/jobs/{job_id[:8]} answered "
                          f"something else than a job: {exc}{withdrawn}", host, http_status=status,
                          job_id=job_id, took=time.monotonic() - t0)
    waited = time.monotonic() - t0
    completed = (last_done - first) if (first is not None and last_done is not None) else 0
    withdrawn = _withdraw(call, job_id, cleanup)
    if last.status == "pending":
        ahead = max(ahead_max, (last.position or 0))
        if ahead > 0 and completed > 0:
            return result("queued-progress", progress_sentence(ahead, completed, waited) +
                          ("" if "withdrawn" in withdrawn else withdrawn), host, job_id=job_id, took=waited,
                          queued_behind=ahead, completed_meanwhile=completed)
        return result("not-taken", not_taken_sentence(job_id, waited, ahead, completed) + withdrawn, host,
                      job_id=job_id, took=waited, queued_behind=ahead, completed_meanwhile=completed)
    return result("not-completed", not_completed_sentence(last, job_id, waited) + withdrawn, host, job_id=job_id,
                  took=waited, worker_id=last.worker_id, taken=taken)


def _queue_counts(call: Call) -> tuple[int | None, int]:
    """(completed + failed jobs or None, running jobs) from GET /api/queue/status."""
    try:
        status, raw = call("GET", qm.QUEUE_STATUS, None)
    except (TunnelError, OSError, http.client.HTTPException):
        return None, 0
    if status != 200:
        return None, 0
    return qm.completions(raw), qm.running(raw)


def _withdraw(call: Call, job_id: str, cleanup) -> str:
    """Cancel the probe job (DELETE); a clause saying so, or that it failed."""
    try:
        status, raw = call("DELETE", qm.job_path(job_id), None)
    except (TunnelError, OSError, http.client.HTTPException) as exc:
        cause = exc.cause if isinstance(exc, TunnelError) else (str(exc) or type(exc).__name__)
        return f"; cancelling the probe job {job_id[:8]} failed ({cause}): it may still run once"
    if status in (200, 204):
        return f"; the probe job {job_id[:8]} was withdrawn" + _cleanup(cleanup, job_id)
    if status == 404:
        return ""
    if status == 400:  # it finished meanwhile: the API cannot delete a finished job
        return _cleanup(cleanup, job_id)
    return (f"; cancelling the probe job {job_id[:8]} failed: the queue manager answered {status}: "
            f"{qm.message(raw)}")


def _cleanup(cleanup, job_id: str | None) -> str:
    """Remove the probe job (None: every job of the probe user) from Redis; a clause when that failed."""
    if cleanup is None:
        return ""
    try:
        problem = cleanup(job_id)
    except Exception as exc:  # noqa: BLE001 - reported in the sentence, never a traceback
        problem = str(exc) or type(exc).__name__
    what = f"the probe job {job_id[:8]}" if job_id else "the probe user's jobs"
    return f"; removing {what} from Redis failed: {problem}" if problem else ""


def forget(r, job_id: str | None) -> None:
    """Remove a probe job's every trace with the redis-py client `r`: job:{id}, its id in each
    queue, the probe user's job set (when empty) and completed counter (round-robin's fairness count).
    `job_id` None: every job of the probe user (after a submission that failed once stored)."""
    if job_id is None:
        for one in r.smembers(f"user:{PROBE_USER}:jobs") or ():
            forget(r, one)
        r.delete(f"user:{PROBE_USER}:jobs", f"user:{PROBE_USER}:completed")
        return
    pipe = r.pipeline(transaction=False)
    pipe.delete(f"job:{job_id}")
    for name in ("pending", "running", "completed", "failed"):
        pipe.zrem(f"queue:{name}", job_id)
    pipe.srem(f"user:{PROBE_USER}:jobs", job_id)
    pipe.delete(f"user:{PROBE_USER}:completed")
    pipe.execute()
    _sweep(r)
    if r.scard(f"user:{PROBE_USER}:jobs") == 0:
        r.delete(f"user:{PROBE_USER}:jobs")


TERMINAL = ("completed", "failed", "cancelled")


def _sweep(r) -> None:
    """Earlier probe jobs a run could not remove (Ctrl-C, a lost connection): each one that has
    ended (or whose job record is gone) goes too. A pending or running one is kept: it may be
    another operator's probe in progress, and is swept by a later probe once it has ended."""
    for other in list(r.smembers(f"user:{PROBE_USER}:jobs") or ()):
        raw = r.get(f"job:{other}")
        try:
            status = json.loads(raw).get("status") if raw else None
        except (ValueError, AttributeError):
            status = None
        if raw is None or status in TERMINAL:
            pipe = r.pipeline(transaction=False)
            pipe.delete(f"job:{other}")
            for name in ("pending", "running", "completed", "failed"):
                pipe.zrem(f"queue:{name}", other)
            pipe.srem(f"user:{PROBE_USER}:jobs", other)
            pipe.execute()


def redis_cleanup(via: Remote, host: str, port: int, password: str | None, timeout: float
                  ) -> Callable[[str], str]:
    """A cleanup over a connection `via` opens to Redis at host:port (the queue manager's API cannot
    delete a finished job). Returns "" when done, else what failed."""
    from .links import redis_client

    def clean(job_id: str | None) -> str:
        try:
            with via.tunnel(host, port, timeout) as sock:
                forget(redis_client(sock, password, timeout), job_id)
        except TunnelError as exc:
            return exc.cause
        except Exception as exc:  # noqa: BLE001 - redis-py's errors, said in one clause
            return str(exc) or type(exc).__name__
        return ""
    return clean


def job_probe(via: Remote, host: str, port: int, timeout: float, user_graph: Mapping | None = None,
              cleanup: Callable[[str], str] | None = None) -> CheckResult:
    """The job probe from the app host `via`, to the queue manager published at host:port there."""
    limit = {"at": time.monotonic() + timeout + CLEANUP_S}

    def call(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        return http_via(via, host, port, method, path, body, timeout=max(0.5, min(10.0, limit["at"] -
                                                                                   time.monotonic())))
    return run_job_probe(call, f"at {host}:{port} on {via.name}", via.name, timeout, user_graph, cleanup)


def settle_with_workers(job: CheckResult | None, busy: list[str]) -> None:
    """A probe job left waiting behind users' jobs while no job completed is still served when a
    worker's own ComfyUI shows it progressing on a user's job (a long job: up to 1800 s): then it is
    queued-progress, judged by the worker-side evidence `busy` (one text per busy worker)."""
    if job is None or job.data.get("stage") != "not-taken" or not busy:
        return
    ahead = job.data.get("queued_behind") or 0
    if ahead <= 0:
        return
    job.ok = True
    job.data["stage"] = "queued-progress"
    job.detail = progress_sentence(ahead, 0, job.duration, f"no job completed yet, but {'; '.join(busy)}")


def planned(mode: str, plan) -> bool:
    """Where the job probe runs: a queue manager is planned, and workers or the serverless endpoint."""
    return "queue-manager" in plan.app.services and (bool(plan.workers) or mode == "serverless")


def skipped(host: str | None, why: str) -> CheckResult:
    return result("skipped", f"skipped: {why}", host)
