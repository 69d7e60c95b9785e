"""Autostop: deletes a rented worker instance when the queue has been idle, without the laptop.

Runs on the always-on app host, in a container of the queue manager's image (python3 only, STANDARD
LIBRARY ONLY: this file is uploaded as it is and imports nothing from comfyume_fab). Every
`check_every_s` seconds it reads the queue manager's own view of the queue through its HTTP API
(the same service, the same address the job probe uses):

  GET /health                  the body must say healthy with Redis connected (the real service
                               answers /api/queue/status with zeros when it lost Redis)
  GET /api/queue/status        pending_jobs, running_jobs
  GET /api/jobs?status=pending the pending jobs with their user_id (only when some are pending)

Busy means: a running job (any user's, the tool's probe user's too), or a pending job of a user
other than the probe user `comfyume-fab-probe` (a probe job waiting for a worker is not work). It
keeps when the queue was last busy, and deletes the instance through the Verda API (the `verda`
SDK's REST calls, reproduced: POST /oauth2/token with client credentials, GET /instances/{id},
PUT /instances {"id": [id], "action": "delete", "volume_ids": null}: data volumes are never deleted)

- when the queue was idle `idle_s` (and the last read of the queue succeeded at least once), or
- when `max_lifetime_s` has passed since the instance's created_at (busy or not).

Each round writes the state file (one JSON line; `status` reads it through host.facts.autostop):
state watching | deleted | error, last_busy, fires_at, fires_for, reason, ... An error (the queue
manager or the Verda API not answering, a delete refused) is shown there and retried next round;
the loop never stops on one. A deletion appends one audit line to the app host's audit.log in the
format of ops/audit.py. The credentials are read from the env file (0600, on the app host only)
each time they are needed: never in argv, never printed.

  python3 autostop.py CONFIG.json                the loop
  python3 autostop.py CONFIG.json --once         one round (tests, manual checks)
  python3 autostop.py CONFIG.json --healthcheck  exit 0 when the state file is fresh
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

STATE_VERSION = 1
PROBE_USER = "comfyume-fab-probe"
STATES = ("watching", "deleted", "error")
HTTP_TIMEOUT = 15.0
HEALTHCHECK = "--healthcheck"
DELETE_PENDING = ("ordered", "provisioning")  # the API refuses to delete these (retried next round)


# --- time ----------------------------------------------------------------------------------------

def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text) -> float | None:
    """RFC 3339 / ISO 8601 (Z or an offset, fractions allowed) -> epoch seconds; None when not one."""
    if not isinstance(text, str) or not text.strip():
        return None
    s = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in s:  # Python < 3.11 reads at most 6 fraction digits
        head, _, rest = s.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        s = head + "." + (digits[:6] or "0") + rest[len(digits):]
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def span(seconds: float | None) -> str:
    """30m, 1h30m, 45s: how idle times are written in hosts.yaml."""
    if seconds is None:
        return "none"
    s = int(seconds)
    if s % 3600 == 0 and s >= 3600:
        return f"{s // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s % 60 == 0 and s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


# --- configuration and secrets ---------------------------------------------------------------------

CONFIG_KEYS = ("host", "instance_id", "idle_s", "check_every_s", "queue_url", "api_url", "env_file",
               "state_file")


def load_config(path: str) -> dict:
    """The non-secret settings install() wrote (config.json). Raises ValueError naming what is wrong."""
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    base = os.path.dirname(os.path.abspath(path))
    for key in ("env_file", "state_file", "audit_file"):
        if cfg.get(key) and not os.path.isabs(cfg[key]):
            cfg[key] = os.path.join(base, cfg[key])
    return cfg


def read_env(path: str) -> dict:
    """KEY=value lines (a value may be single- or double-quoted); comments and blanks skipped."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key.strip()] = value
    return out


# --- the queue, as the queue manager sees it -------------------------------------------------------

class Observation:
    """One read of the queue: ok, users' pending jobs, running jobs, the error in words."""

    def __init__(self, ok: bool, pending: int = 0, running: int = 0, error: str = ""):
        self.ok, self.pending, self.running, self.error = ok, pending, running, error

    @property
    def busy(self) -> bool:
        return self.ok and (self.pending > 0 or self.running > 0)

    def __repr__(self) -> str:
        return f"Observation(ok={self.ok}, pending={self.pending}, running={self.running}, error={self.error!r})"


def _count(data, key):
    n = data.get(key) if isinstance(data, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def read_queue(get) -> Observation:
    """`get(path) -> (status, body bytes)` against the queue manager; raises nothing: an error is
    an Observation with ok False and the cause in words."""
    where = ""
    try:
        where = "GET /health"
        code, body = get("/health")
        health = json.loads(body or b"null")
        if code >= 400 or not isinstance(health, dict) or health.get("status") != "healthy" \
                or health.get("redis_connected") is False:
            said = health.get("status") if isinstance(health, dict) else None
            return Observation(False, error=f"the queue manager is not healthy ({where}: HTTP {code}, "
                                            f"status {said!r}, redis_connected "
                                            f"{health.get('redis_connected') if isinstance(health, dict) else None})")
        where = "GET /api/queue/status"
        code, body = get("/api/queue/status")
        data = json.loads(body or b"null")
        pending, running = _count(data, "pending_jobs"), _count(data, "running_jobs")
        if code >= 400 or pending is None or running is None:
            return Observation(False, error=f"the queue manager answered {where} with HTTP {code} and no "
                                            "pending_jobs/running_jobs counts")
        users_pending = pending
        if pending:
            where = "GET /api/jobs?status=pending"
            code, body = get(f"/api/jobs?status=pending&limit={pending + 50}")
            try:
                jobs = json.loads(body or b"null") if code < 400 else None
            except ValueError:
                jobs = None
            # Without the list (an older queue manager), every pending job counts as a user's: busy.
            probe = sum(1 for j in jobs if isinstance(j, dict) and j.get("user_id") == PROBE_USER
                        and j.get("status") == "pending") if isinstance(jobs, list) else 0
            users_pending = max(0, pending - probe)  # a pending job not in the list counts as a user's
        return Observation(True, users_pending, running)
    except (OSError, ValueError, urllib.error.URLError) as exc:  # incl. timeouts, refused, bad JSON
        return Observation(False, error=f"the queue manager did not answer {where}: {_why(exc)}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# --- the decision (pure) ----------------------------------------------------------------------------

def fresh_state(cfg: dict, now: float) -> dict:
    return {"version": STATE_VERSION, "host": cfg["host"], "instance_id": cfg["instance_id"],
            "hostname": cfg.get("hostname"), "state": "watching", "idle_s": int(cfg["idle_s"]),
            "max_lifetime_s": cfg.get("max_lifetime_s"), "check_every_s": cfg["check_every_s"],
            "created_at": cfg.get("created_at"), "watching_since": iso(now), "last_busy": iso(now),
            "last_check": None, "last_ok_read": None, "pending": None, "running": None,
            "fires_at": None, "fires_for": None, "reason": "", "error_since": None, "deleted_at": None}


def fires(st: dict, cfg: dict) -> tuple[float | None, str | None]:
    """When the instance would be deleted, and for what: the earlier of idle and max lifetime."""
    candidates = []
    last_busy = parse_iso(st.get("last_busy"))
    if last_busy is not None:
        candidates.append((last_busy + int(cfg["idle_s"]), "idle"))
    created = parse_iso(cfg.get("created_at"))
    if cfg.get("max_lifetime_s") and created is not None:
        candidates.append((created + int(cfg["max_lifetime_s"]), "max_lifetime"))
    return min(candidates) if candidates else (None, None)


def observe(prev: dict | None, cfg: dict, now: float, obs: Observation) -> tuple[dict, str | None]:
    """One round, pure: the new state and, when the instance is due, why ("idle" | "max_lifetime").
    A state of another instance (a new one was rented) starts afresh; a deleted one stays deleted."""
    st = dict(prev) if prev and prev.get("instance_id") == cfg["instance_id"] else fresh_state(cfg, now)
    if st.get("state") == "deleted":
        return st, None
    st.update({"idle_s": int(cfg["idle_s"]), "max_lifetime_s": cfg.get("max_lifetime_s"),
               "check_every_s": cfg["check_every_s"], "created_at": cfg.get("created_at"),
               "hostname": cfg.get("hostname"), "last_check": iso(now)})
    if obs.ok:
        st.update({"last_ok_read": iso(now), "pending": obs.pending, "running": obs.running})
        if obs.busy:
            st["last_busy"] = iso(now)
    at, what = fires(st, cfg)
    st["fires_at"], st["fires_for"] = iso(at), what
    due = None
    if at is not None and now >= at:
        if what == "max_lifetime":
            due = "max_lifetime"
        elif not obs.busy and st.get("last_ok_read"):  # never on idle without one good read of the queue
            due = "idle"
    if obs.ok and not (due and st.get("state") == "error"):  # a failing delete keeps its error_since
        st["state"], st["reason"], st["error_since"] = "watching", ("busy" if obs.busy else "idle"), None
    elif not obs.ok:
        _error(st, now, obs.error)
    return st, due


def _error(st: dict, now: float, why: str) -> None:
    if st.get("state") != "error":
        st["error_since"] = iso(now)
    st["state"], st["reason"] = "error", why


def due_sentence(due: str, st: dict, cfg: dict) -> str:
    if due == "max_lifetime":
        return (f"max lifetime {span(cfg.get('max_lifetime_s'))} passed (created {cfg.get('created_at')})")
    return f"idle {span(cfg['idle_s'])} (no pending or running job since {st.get('last_busy')})"


def deleted(st: dict, now: float, due: str, sentence: str) -> dict:
    st = dict(st)
    st.update({"state": "deleted", "deleted_at": iso(now), "fires_for": due, "reason": sentence,
               "error_since": None})
    return st


def failed_delete(st: dict, now: float, why: str, cfg: dict) -> dict:
    st = dict(st)
    _error(st, now, f"deleting the instance failed: {why} (retrying every {span(cfg['check_every_s'])})")
    return st


def audit_line(cfg: dict, now: float, due: str, sentence: str, result: str = "ok") -> str:
    """ops/audit.py's format: time by= task= rev= config= mode= result= detail."""
    detail = (f"host={cfg['host']} instance={cfg['instance_id']} reason={due} "
              f"idle_s={cfg['idle_s']} max_lifetime_s={cfg.get('max_lifetime_s')}")
    return (f"{iso(now)} by={cfg.get('by', 'autostop')} task=autostop-delete rev={cfg.get('revision', '-')} "
            f"config={cfg.get('config_hash', '-')} mode={cfg.get('mode', '-')} result={result} {detail}")


# --- the Verda API (the SDK's REST calls, reproduced) ---------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int | None, code: str | None, message: str):
        self.status, self.code = status, code
        super().__init__(message)


def http(method: str, url: str, body=None, token: str | None = None, timeout: float = HTTP_TIMEOUT,
         client_id: str = "") -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", "comfyume-fab-autostop-" + client_id[:10])
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api_error(status: int, body: bytes, what: str) -> ApiError:
    """The SDK's error shape {"code", "message"}, in one line (never a request body)."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    code = data.get("code") if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    text = " ".join(str(message or (body or b"").decode("utf-8", "replace")).split())[:200]
    said = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    return ApiError(status, code, said + (f": {text}" if text else ""))


def delete_instance(cfg: dict, creds: dict, call=http) -> str:
    """Delete the instance; returns what happened ("deleted" | "already gone"). Raises ApiError or
    OSError (retried next round)."""
    base = cfg["api_url"].rstrip("/")
    cid, secret = creds.get("VERDA_CLIENT_ID", ""), creds.get("VERDA_CLIENT_SECRET", "")
    if not cid or not secret:
        raise ApiError(None, None, f"{cfg['env_file']} lacks VERDA_CLIENT_ID or VERDA_CLIENT_SECRET")
    status, body = call("POST", base + "/oauth2/token", {"grant_type": "client_credentials", "client_id": cid,
                                                         "client_secret": secret}, client_id=cid)
    if status >= 400:
        raise api_error(status, body, "POST /oauth2/token")
    try:
        token = json.loads(body)["access_token"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(status, None, "POST /oauth2/token answered without an access_token") from None
    iid = cfg["instance_id"]
    status, body = call("GET", f"{base}/instances/{urllib.parse.quote(iid, safe='')}", None, token, client_id=cid)
    if status == 404:
        return "already gone"
    if status >= 400:
        raise api_error(status, body, f"GET /instances/{iid}")
    try:
        now_status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        now_status = None
    if now_status in ("deleted", "discontinued"):
        return "already gone"
    if now_status in DELETE_PENDING:
        raise ApiError(status, None, f"the instance is {now_status}: Verda deletes it only once it is running")
    status, body = call("PUT", base + "/instances", {"id": [iid], "action": "delete", "volume_ids": None}, token,
                        client_id=cid)
    if status == 404:
        return "already gone"
    if status >= 400:
        raise api_error(status, body, "PUT /instances (delete)")
    return "deleted"


# --- files ------------------------------------------------------------------------------------------

def read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: str, st: dict) -> None:
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w", encoding="utf-8") as fh:
        fh.write(json.dumps(st, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_audit(path: str | None, line: str) -> None:
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        log(f"could not append the audit line to {path}: {exc}")


def log(text: str) -> None:
    print(f"{iso(time.time())} autostop: {text}", flush=True)


# --- the loop -----------------------------------------------------------------------------------------

def queue_getter(base: str):
    def get(path: str) -> tuple[int, bytes]:
        return http("GET", base.rstrip("/") + path, timeout=HTTP_TIMEOUT)
    return get


def round_once(config_path: str, now: float | None = None, get=None, call=http) -> dict:
    """Read the config, the queue, decide, delete when due; write the state; return it."""
    cfg = load_config(config_path)
    now = time.time() if now is None else now
    prev = read_state(cfg["state_file"])
    if prev and prev.get("instance_id") == cfg["instance_id"] and prev.get("state") == "deleted":
        return prev
    obs = read_queue(get or queue_getter(cfg["queue_url"]))
    st, due = observe(prev, cfg, now, obs)
    if due:
        sentence = due_sentence(due, st, cfg)
        try:
            what = delete_instance(cfg, read_env(cfg["env_file"]), call)
        except (ApiError, OSError, urllib.error.URLError) as exc:
            st = failed_delete(st, now, _why(exc), cfg)
        else:
            if what == "already gone":
                sentence += "; the instance was already gone"
            st = deleted(st, now, due, sentence)
            append_audit(cfg.get("audit_file"), audit_line(cfg, now, due, sentence))
    _tell(prev, st)
    write_state(cfg["state_file"], st)
    return st


def _tell(prev: dict | None, st: dict) -> None:
    """Log a change of state or reason (not every round)."""
    before = (prev or {}).get("state"), (prev or {}).get("reason")
    if (st.get("state"), st.get("reason")) != before:
        tail = f", deletes at {st.get('fires_at')} ({st.get('fires_for')})" if st.get("state") != "deleted" else ""
        log(f"{st.get('host')} instance {st.get('instance_id')}: {st.get('state')}: {st.get('reason')}{tail}")


def healthcheck(config_path: str, now: float | None = None) -> int:
    """0 when the state file was written within three rounds."""
    try:
        cfg = load_config(config_path)
        st = read_state(cfg["state_file"]) or {}
    except (OSError, ValueError):
        return 1
    last = parse_iso(st.get("last_check"))
    if st.get("state") == "deleted":
        return 0
    now = time.time() if now is None else now
    return 0 if last is not None and now - last <= 3 * float(cfg["check_every_s"]) + 30 else 1


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: autostop.py CONFIG.json [--once|--healthcheck]", file=sys.stderr)
        return 2
    path = argv[0]
    if HEALTHCHECK in argv[1:]:
        return healthcheck(path)
    if "--once" in argv[1:]:
        st = round_once(path)
        return 0 if st.get("state") != "error" else 1
    log(f"started with {path}")
    while True:
        every = 60.0
        try:
            every = float(load_config(path)["check_every_s"])
            round_once(path)
        except Exception as exc:  # never stop the loop: say it, retry next round
            log(f"round failed: {_why(exc)}")
        time.sleep(max(1.0, every))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
