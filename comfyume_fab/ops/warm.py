"""`invoke warm TIER --replicas N --until HH:MM`: keep a serverless tier warm for a workshop, and
let it cool after, even with the laptop closed.

Now (from here, through the provider's deployment API, checks/deployments.py): the deployment's
minimum replicas go up to N (its maximum too, when lower), so no participant waits for a cold start.

Later (on the app host, with nobody connected): a small job container, `<project>-warm-<tier>`,
started from the queue manager's image (already on the host: it needs only python3), sleeps until
the recorded time and then sets the minimum and maximum back to what they were. Its schedule and
the API credentials are in `<workdir>/warm-<tier>.env` (mode 0600, Docker's env file for the
container, never in a command line). It retries every 30 s until the API accepts, then logs
"lowered" and stays as the record (`docker logs <project>-warm-<tier>`); its restart policy
(unless stopped) brings it back after a reboot, and a new `warm` for the tier replaces it. There is
no systemd timer on the app host to rely on, and no autostop job to share.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Callable

from ..checks.deployments import api_for
from ..errors import ConfigError, UnhealthyError
from ..host import commands as cmd
from ..host.actions import containers as ctract
from ..host.actions import workdir as wdact
from ..host.session import Session
from ..inventory.model import Inventory
from .serverless import check_tier

UNTIL_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")

# The job itself: standard library only; everything it needs comes from its environment.
JOB = r'''
import json, os, sys, time, urllib.request
E = os.environ
def call(method, path, body, token=None):
    req = urllib.request.Request(E["WARM_API"].rstrip("/") + path, data=json.dumps(body).encode(), method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read() or b"{}")
at = float(E["WARM_LOWER_AT"])
print("warm job: deployment %s, min replicas back to %s at %s" % (E["WARM_DEPLOYMENT"], E["WARM_MIN_AFTER"],
      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))), flush=True)
while time.time() < at:
    time.sleep(min(30.0, max(0.2, at - time.time())))
while True:
    try:
        tok = call("POST", "/oauth2/token", {"grant_type": "client_credentials", "client_id": E["WARM_CLIENT_ID"],
                                             "client_secret": E["WARM_CLIENT_SECRET"]})["access_token"]
        new = call("PATCH", "/container-deployments/%s/scaling" % E["WARM_DEPLOYMENT"],
                   {"min_replica_count": int(E["WARM_MIN_AFTER"]), "max_replica_count": int(E["WARM_MAX_AFTER"])}, tok)
        print("warm job: lowered at %s: min %s max %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              new.get("min_replica_count"), new.get("max_replica_count")), flush=True)
        break
    except Exception as exc:
        print("warm job: lowering failed (%s); retrying in 30 s" % exc, flush=True)
        time.sleep(30)
while True:
    time.sleep(3600)
'''


def lower_at(until: str, now: dt.datetime | None = None) -> dt.datetime:
    """The next local HH:MM[:SS] after `now` (today, else tomorrow), timezone-aware."""
    m = UNTIL_RE.match(until.strip())
    if not m:
        raise ConfigError(f"--until {until!r} is not a time of day (write HH:MM, e.g. --until 17:30)")
    now = now or dt.datetime.now().astimezone()
    when = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=int(m.group(3) or 0), microsecond=0)
    return when if when > now else when + dt.timedelta(days=1)


def job_name(inv: Inventory, tier: str) -> str:
    return f"{inv.project}-warm-{tier}"


def warm(inv: Inventory, tier: str, replicas: int, until: str, say: Callable[[str], None]) -> dict:
    check_tier(inv, tier)
    if replicas < 1:
        raise ConfigError(f"--replicas {replicas}: give at least 1 replica to keep warm")
    api = api_for(inv)
    if api is None:
        raise ConfigError(f"{inv.path}: warm needs the deployment API: set serverless.api (e.g. "
                          "https://api.verda.com/v1) and the secrets VERDA_CLIENT_ID and VERDA_CLIENT_SECRET")
    when = lower_at(until)
    t = inv.serverless.tier(tier)
    dep = t.deployment_name
    before = api.scaling(dep)
    low, high = int(before.get("min_replica_count") or 0), int(before.get("max_replica_count") or 0)
    low_after = low  # what the job sets back: the minimum as it was before this warm
    app = inv.app_host
    cid, secret = inv.secrets["VERDA_CLIENT_ID"].reveal(), inv.secrets["VERDA_CLIENT_SECRET"].reveal()
    env_text = "".join(f"{k}={v}\n" for k, v in {
        "WARM_API": inv.serverless.api, "WARM_DEPLOYMENT": dep, "WARM_LOWER_AT": f"{when.timestamp():.0f}",
        "WARM_MIN_AFTER": str(low_after), "WARM_MAX_AFTER": str(high), "WARM_CLIENT_ID": cid,
        "WARM_CLIENT_SECRET": secret}.items())
    name = job_name(inv, tier)
    env_path = cmd.workdir_path(app.workdir, f"warm-{tier}.env")
    with Session(inv, [app]) as s:
        s.connect()
        s.require_all()
        remote = s[app.name]
        made = remote.run(wdact.mkdir(app.workdir), step="warm job")
        if not made.ok:
            raise UnhealthyError(f"could not create {app.workdir}: {made.tail()}", host=app.name, step="warm job")
        remote.put(env_path, env_text.encode(), mode=0o600)
        say(f"{dep}: min replicas {low} -> {replicas} (max {high} -> {max(high, replicas)}) until "
            f"{when.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        after = api.set_scaling(dep, {"min_replica_count": replicas, "max_replica_count": max(high, replicas)})
        run = ctract.run_job(app.workdir, name, f"org.comfyume.warm={tier}", f"warm-{tier}.env",
                          inv.images.queue_manager, ["python3", "-u", "-c", JOB])
        res = remote.run(run, timeout=inv.timeouts.command, step="warm job")
        if not res.ok:
            api.set_scaling(dep, {"min_replica_count": low, "max_replica_count": high})
            raise UnhealthyError(f"starting the job that lowers the replicas again failed ({res.tail()}); the "
                                 f"minimum was put back to {low}", host=app.name, step="warm job",
                                 hint="check that the queue manager's image is on the app host (start-all)")
    return {"tier": tier, "deployment": dep, "min_before": low, "min_now": after.get("min_replica_count"),
            "max_now": after.get("max_replica_count"), "lower_at": when.isoformat(), "job": name,
            "host": app.name}
