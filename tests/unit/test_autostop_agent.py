"""The autostop program (host/agents/autostop.py) that runs on the app host: its decision on a fake
clock (no sleeping), the Verda API calls it makes, its state file and audit line, and its view of the
queue read from the stand-in queue manager over a real Redis."""
from __future__ import annotations

import json

import pytest

from comfyume_fab.host.agents import autostop as agent
from tests.support import post_json

T0 = 1_800_000_000.0  # a fixed "now" (2027-01-15T08:00:00Z)
SECRET = "s3cr3t-client-secret-value"


def cfg(tmp_path=None, **over) -> dict:
    base = {"host": "verda", "instance_id": "inst-1", "hostname": "comfyume-worker-ab12", "idle_s": 1800,
            "max_lifetime_s": 43200, "check_every_s": 60, "created_at": agent.iso(T0 - 600),
            "queue_url": "http://127.0.0.1:9", "api_url": "http://api.invalid/v1",
            "env_file": "verda.env", "state_file": "state/state.json", "audit_file": "audit.log",
            "by": "autostop@mello", "revision": "abc123", "config_hash": "cfg9", "mode": "dual-server"}
    base.update(over)
    return base


IDLE = agent.Observation(True, 0, 0)
BUSY = agent.Observation(True, 0, 1)
DOWN = agent.Observation(False, error="the queue manager did not answer GET /health: connection refused")


def run(observations, c=None, start=T0, step=60.0):
    """Feed observations one per `step` seconds; the states and the first due (time, why)."""
    c = c or cfg()
    st, fired, states = None, None, []
    for i, obs in enumerate(observations):
        st, due = agent.observe(st, c, start + i * step, obs)
        states.append(st)
        if due and fired is None:
            fired = (start + i * step, due)
    return states, fired


def test_idle_fires_after_idle_seconds_counted_from_the_last_busy_read():
    obs = [BUSY, BUSY] + [IDLE] * 40
    states, fired = run(obs)
    last_busy = T0 + 60
    assert fired == (last_busy + 1800, "idle")
    st = states[5]
    assert st["state"] == "watching" and st["reason"] == "idle"
    assert st["last_busy"] == agent.iso(last_busy)
    assert (st["fires_at"], st["fires_for"]) == (agent.iso(last_busy + 1800), "idle")


def test_a_job_seen_running_again_restarts_the_idle_clock():
    obs = [IDLE] * 20 + [BUSY] + [IDLE] * 40
    _, fired = run(obs)
    assert fired == (T0 + 20 * 60 + 1800, "idle")


def test_max_lifetime_fires_even_while_busy():
    c = cfg(max_lifetime_s=3600, created_at=agent.iso(T0))
    states, fired = run([BUSY] * 90, c)
    assert fired == (T0 + 3600, "max_lifetime")
    assert (states[0]["fires_at"], states[0]["fires_for"]) == (agent.iso(T0 + 1800), "idle")
    assert (states[40]["fires_at"], states[40]["fires_for"]) == (agent.iso(T0 + 3600), "max_lifetime")


def test_never_deletes_on_idle_without_one_good_read_of_the_queue():
    # a wrong queue URL must not delete a GPU that may be busy: only max_lifetime still applies
    states, fired = run([DOWN] * 80, cfg(max_lifetime_s=None))
    assert fired is None
    assert states[-1]["state"] == "error" and "did not answer" in states[-1]["reason"]
    assert states[-1]["error_since"] == agent.iso(T0)  # since the first failed round, kept


def test_a_queue_manager_gone_after_good_reads_lets_the_idle_clock_run():
    # stop-all stopped the app stack: the worker can take no job, the instance goes after `idle`
    _, fired = run([IDLE, BUSY] + [DOWN] * 40, cfg(max_lifetime_s=None))
    assert fired == (T0 + 60 + 1800, "idle")


def test_error_clears_when_the_queue_answers_again():
    states, _ = run([IDLE, DOWN, DOWN, IDLE])
    assert [s["state"] for s in states] == ["watching", "error", "error", "watching"]
    assert states[-1]["error_since"] is None


def test_a_new_instance_starts_afresh_and_a_deleted_one_stays_deleted():
    st, _ = agent.observe(None, cfg(), T0, BUSY)
    gone = agent.deleted(st, T0 + 5, "idle", "idle 30m")
    again, due = agent.observe(gone, cfg(), T0 + 4000, IDLE)
    assert again["state"] == "deleted" and due is None
    new, due = agent.observe(gone, cfg(instance_id="inst-2"), T0 + 4000, IDLE)
    assert (new["state"], new["instance_id"], new["watching_since"], due) == ("watching", "inst-2",
                                                                               agent.iso(T0 + 4000), None)


def _queue(pending_jobs, running, listing=True):
    def get(path):
        if path == "/health":
            return 200, json.dumps({"status": "healthy", "redis_connected": True}).encode()
        if path == "/api/queue/status":
            return 200, json.dumps({"pending_jobs": len(pending_jobs), "running_jobs": running}).encode()
        if path.startswith("/api/jobs?") and listing:
            return 200, json.dumps([{"id": str(i), "user_id": u, "status": "pending"}
                                    for i, u in enumerate(pending_jobs)]).encode()
        return 404, b'{"detail": "Not Found"}'
    return get


@pytest.mark.parametrize("pending, running, busy", [
    ([], 0, False),
    ([agent.PROBE_USER], 0, False),  # the tool's probe waiting for a worker is no work
    ([agent.PROBE_USER], 1, True),  # a running job is work, the probe's too
    (["user007"], 0, True),
    ([agent.PROBE_USER, "user003"], 0, True),
])
def test_busy_is_a_running_job_or_a_users_pending_job(pending, running, busy):
    assert agent.read_queue(_queue(pending, running)).busy is busy


def test_without_the_job_list_every_pending_job_counts_as_work():
    assert agent.read_queue(_queue([agent.PROBE_USER], 0, listing=False)).busy is True


def test_a_queue_manager_without_redis_is_not_read_as_idle():
    # the real one answers /api/queue/status with zeros when it lost Redis: /health decides first
    def get(path):
        if path == "/health":
            return 200, b'{"status": "unhealthy", "redis_connected": false}'
        return 200, b'{"pending_jobs": 0, "running_jobs": 0}'
    obs = agent.read_queue(get)
    assert not obs.ok and "not healthy" in obs.error and "redis_connected False" in obs.error


def test_an_unanswered_queue_is_an_error_in_words():
    def get(path):
        raise ConnectionRefusedError(111, "Connection refused")
    obs = agent.read_queue(get)
    assert not obs.ok and obs.error.startswith("the queue manager did not answer GET /health:")


# --- one round against files and a fake Verda API ---------------------------------------------------

class FakeVerda:
    """Records the calls; answers as the Verda API does (the SDK's paths and bodies)."""

    def __init__(self, status="running", fail_put=None, down=False):
        self.calls, self.status, self.fail_put, self.down = [], status, fail_put, down

    def __call__(self, method, url, body=None, token=None, client_id="", **_):
        self.calls.append((method, url.replace("http://api.invalid/v1", ""), body, token))
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if url.endswith("/oauth2/token"):
            if body.get("client_secret") != SECRET:
                return 401, b'{"code": "unauthorized_request", "message": "Invalid client credentials"}'
            return 200, json.dumps({"access_token": "tok-1", "refresh_token": "r", "scope": "x",
                                    "token_type": "Bearer", "expires_in": 3600}).encode()
        if method == "GET":
            return (404, b'{"code": "not_found", "message": "Instance not found"}') if self.status is None else \
                (200, json.dumps({"id": "inst-1", "status": self.status}).encode())
        if self.fail_put:
            return self.fail_put
        return 202, b""


@pytest.fixture
def place(tmp_path):
    (tmp_path / "state").mkdir()
    env = tmp_path / "verda.env"
    env.write_text(f"VERDA_CLIENT_ID=client-abcdefghij\nVERDA_CLIENT_SECRET='{SECRET}'\n")
    env.chmod(0o600)
    (tmp_path / "audit.log").write_text("")

    def write(**over):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg(**over)))
        return str(path)
    return tmp_path, write


def test_a_due_round_deletes_through_the_sdks_calls_and_records_it(place, capsys):
    tmp, write = place
    path = write(idle_s=60)
    api = FakeVerda()
    first = agent.round_once(path, now=T0, get=_queue([], 1), call=api)
    assert first["state"] == "watching" and api.calls == []
    st = agent.round_once(path, now=T0 + 61, get=_queue([agent.PROBE_USER], 0), call=api)
    assert st["state"] == "deleted" and st["deleted_at"] == agent.iso(T0 + 61) and st["fires_for"] == "idle"
    assert [(m, u) for m, u, _, _ in api.calls] == [("POST", "/oauth2/token"), ("GET", "/instances/inst-1"),
                                                    ("PUT", "/instances")]
    assert api.calls[0][2] == {"grant_type": "client_credentials", "client_id": "client-abcdefghij",
                               "client_secret": SECRET}
    assert api.calls[2][2:] == ({"id": ["inst-1"], "action": "delete", "volume_ids": None}, "tok-1")
    saved = json.loads((tmp / "state" / "state.json").read_text())
    assert saved == st
    audit = (tmp / "audit.log").read_text().splitlines()
    assert len(audit) == 1 and " by=autostop@mello task=autostop-delete rev=abc123 config=cfg9 mode=dual-server " \
                               "result=ok host=verda instance=inst-1 reason=idle " in audit[0]
    # deleted stays deleted: no further call
    agent.round_once(path, now=T0 + 200, get=_queue([], 0), call=api)
    assert len(api.calls) == 3
    seen = capsys.readouterr().out + (tmp / "audit.log").read_text() + (tmp / "state" / "state.json").read_text()
    assert SECRET not in seen and "tok-1" not in seen


def test_api_down_is_an_error_retried_next_round_never_a_crash(place):
    tmp, write = place
    path = write(idle_s=60)
    agent.round_once(path, now=T0, get=_queue([], 0), call=FakeVerda())
    st = agent.round_once(path, now=T0 + 60, get=_queue([], 0), call=FakeVerda(down=True))
    assert st["state"] == "error" and st["reason"].startswith("deleting the instance failed: ")
    assert "retrying every 1m" in st["reason"] and st["error_since"] == agent.iso(T0 + 60)
    refused = FakeVerda(fail_put=(400, b'{"code": "invalid_request", "message": "Cannot delete now"}'))
    st = agent.round_once(path, now=T0 + 120, get=_queue([], 0), call=refused)
    assert st["state"] == "error" and "HTTP 400 invalid_request: Cannot delete now" in st["reason"]
    assert st["error_since"] == agent.iso(T0 + 60)
    st = agent.round_once(path, now=T0 + 180, get=_queue([], 0), call=FakeVerda())
    assert st["state"] == "deleted"
    assert (tmp / "audit.log").read_text().count("task=autostop-delete") == 1


def test_an_instance_still_provisioning_is_retried_and_one_already_gone_is_deleted(place):
    tmp, write = place
    path = write(idle_s=60)
    agent.round_once(path, now=T0, get=_queue([], 0), call=FakeVerda())
    st = agent.round_once(path, now=T0 + 60, get=_queue([], 0), call=FakeVerda(status="provisioning"))
    assert st["state"] == "error" and "the instance is provisioning" in st["reason"]
    st = agent.round_once(path, now=T0 + 120, get=_queue([], 0), call=FakeVerda(status=None))
    assert st["state"] == "deleted" and st["reason"].endswith("the instance was already gone")


def test_bad_credentials_say_so_without_the_secret(place):
    tmp, write = place
    (tmp / "verda.env").write_text("VERDA_CLIENT_ID=client-abcdefghij\nVERDA_CLIENT_SECRET=wrong\n")
    path = write(idle_s=60)
    agent.round_once(path, now=T0, get=_queue([], 0), call=FakeVerda())
    st = agent.round_once(path, now=T0 + 60, get=_queue([], 0), call=FakeVerda())
    assert st["state"] == "error" and "POST /oauth2/token: HTTP 401 unauthorized_request" in st["reason"]
    assert "wrong" not in st["reason"]


def test_healthcheck_wants_a_fresh_state_file(place):
    tmp, write = place
    path = write(check_every_s=10)
    assert agent.healthcheck(path, now=T0) == 1  # no state yet
    agent.round_once(path, now=T0, get=_queue([], 0), call=FakeVerda())
    assert agent.healthcheck(path, now=T0 + 30) == 0
    assert agent.healthcheck(path, now=T0 + 120) == 1


def test_the_program_imports_nothing_but_the_standard_library():
    import ast
    import sys
    tree = ast.parse(open(agent.__file__).read())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


# --- the queue as the stand-in queue manager answers it (real Redis) ------------------------------

def test_read_queue_against_the_stand_in_queue_manager(start, redis_server):
    qm = start("queue_manager", "QUEUE_MANAGER_LISTEN_PORT", redis_server.env(), ready_path="/health")
    get = agent.queue_getter(qm.url)
    assert agent.read_queue(get).busy is False
    graph = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    assert post_json(qm.url + "/api/jobs", {"user_id": agent.PROBE_USER, "workflow": graph})[0] == 201
    obs = agent.read_queue(get)
    assert (obs.ok, obs.pending, obs.running, obs.busy) == (True, 0, 0, False)
    assert post_json(qm.url + "/api/jobs", {"user_id": "user004", "workflow": graph})[0] == 201
    obs = agent.read_queue(get)
    assert (obs.pending, obs.busy) == (1, True)
    redis_server.client.delete("queue:pending")
    redis_server.client.zadd("queue:running", {"some-job": T0})  # a worker took a job
    obs = agent.read_queue(get)
    assert (obs.pending, obs.running, obs.busy) == (0, 1, True)
