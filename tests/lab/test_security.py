"""Security (issue 6): host keys, secrets, file modes, Redis auth and the audit log, on the lab's
real sshd and Docker engines."""
from __future__ import annotations

import json
import os
import pwd
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis as redis_py

from comfyume_fab.ops.audit import local_revision
from comfyume_fab.checks.links import redis_client
from comfyume_fab.errors import ExitCode
from comfyume_fab.inventory import load_inventory
from comfyume_fab.lab import faults, hostsvc
from comfyume_fab.ops.audit import who
from comfyume_fab.host.ssh.remote import Remote
from comfyume_fab.host.session import target
from tests.support import REPO, invoke

pytestmark = pytest.mark.lab

FAST = {"connect": 3, "command": 30, "health": 30, "redis": 2, "probe": 10}
HOSTS = ("mello", "verda")


def fast_inventory(lab, tmp_path: Path, name: str = "fast", **overrides) -> Path:
    return lab.inventory(tmp_path / name, timeouts=FAST, **overrides)


def error_line(res, code: ExitCode) -> str:
    assert "Traceback" not in res.stdout + res.stderr
    assert res.returncode == code, res.stdout + res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    return line


def workdir(lab, host: str) -> Path:
    return lab.hosts[host].home / "comfyume"


def secret_values(lab) -> list[str]:
    values = [lab.secrets["REDIS_PASSWORD"], lab.secrets["ADMIN_PASSWORD"]]
    assert all(len(v) >= 12 for v in values)  # long enough that a match is never a coincidence
    return values


# ------------------------------------------------------------------------------------- host keys
def test_unknown_host_key_is_refused_and_never_added(lab, deployed, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    inv = fast_inventory(lab, tmp_path, ssh={"known_hosts": str(known)})
    res = invoke("start-all", "--hosts", str(inv))
    line = error_line(res, ExitCode.UNREACHABLE)
    assert line.startswith(f"error: start-all: host mello, step connect: 100.64.0.1 is not in {known}; refusing "
                           "an unknown host key (and 1 more host(s) unreachable: verda) (add it with `ssh-keyscan` "
                           "after checking the fingerprint, or set ssh.accept_new_host_keys: true"), line
    assert known.read_text() == ""


def test_accept_new_host_keys_records_a_new_host_but_still_refuses_a_changed_key(lab, deployed, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    inv = fast_inventory(lab, tmp_path, ssh={"known_hosts": str(known), "accept_new_host_keys": True})
    res = invoke("status", "--no-probe", "--hosts", str(inv))
    assert res.returncode == 0, res.stdout + res.stderr
    recorded = sorted(known.read_text().splitlines())
    assert recorded == sorted(f"{lab.hosts[h].address} {hostsvc.host_public_key(lab.hosts[h])}" for h in HOSTS)
    # a second run trusts what it recorded and adds nothing
    assert invoke("status", "--no-probe", "--hosts", str(inv)).returncode == 0
    assert sorted(known.read_text().splitlines()) == recorded
    h = lab.hosts["verda"]
    priv, pub = h.host_key.read_bytes(), Path(str(h.host_key) + ".pub").read_bytes()
    faults.replace_host_key("verda")
    try:
        res = invoke("start-all", "--hosts", str(inv))
    finally:
        faults.restore_host_key("verda", priv, pub)
    line = error_line(res, ExitCode.UNREACHABLE)
    assert line.startswith(f"error: start-all: host verda, step connect: the SSH host key of 100.64.0.2 has "
                           f"CHANGED since it was recorded in {known}; refusing to connect"), line
    assert sorted(known.read_text().splitlines()) == recorded  # not replaced, not appended


# -------------------------------------------------------------------------------------- secrets
class ArgvWatch:
    """Every process's argv on this machine -- the lab hosts' sshd sessions, shells, docker clients,
    compose, containerd shims and the containers' processes are all visible from here -- read
    from /proc (what `ps -eo args` shows) every `interval` s while a run goes on."""

    def __init__(self, secrets: list[str], interval: float = 0.02):
        self.secrets = [s.encode() for s in secrets]
        self.interval = interval
        self.hits: list[str] = []
        self.seen: set[bytes] = set()
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        argv = f.read()
                except OSError:
                    continue
                if argv and argv not in self.seen:
                    self.seen.add(argv)
                    if any(s in argv for s in self.secrets):
                        self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def saw(self, text: str) -> bool:
        return any(text.encode() in argv.replace(b"\0", b" ") for argv in self.seen)


def test_secrets_never_appear_in_any_argv_during_a_full_redeploy(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    with ArgvWatch(secret_values(lab)) as watch:
        down = invoke("stop-all", "--down", "--hosts", str(inv))
        up = invoke("start-all", "--hosts", str(inv))  # every container created anew
    assert down.returncode == 0 and up.returncode == 0, down.stderr + up.stderr
    assert watch.hits == []
    # the watch really saw the run: compose on both hosts, Redis (which retitles itself), its
    # healthcheck (whose argv names the variable, never its value) and both hosts' SSH sessions
    assert watch.scans > 100
    for text in ("docker compose -p comfyume --env-file .env -f app.yml", "up -d", "-f worker.yml",
                 "redis-server", "REDISCLI_AUTH=", "sshd: cfab-mello", "sshd: cfab-verda"):
        assert watch.saw(text), text


def test_secrets_never_appear_in_output_logs_or_files_on_the_hosts(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    secrets = secret_values(lab)
    runs = [invoke(*args, "--hosts", str(inv)) for args in (
        ["plan"], ["plan", "--json"], ["start-all", "--dry-run"], ["stop-all", "--dry-run"], ["status"],
        ["status", "--json"], ["start-all"], ["start-all", "--verbose"], ["status", "--verbose"])]
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr for r in runs]
    faults.partition("verda", "mello")  # and on failures: the error line, the --verbose traceback
    try:
        runs += [invoke(*args, "--hosts", str(inv)) for args in (
            ["start-all", "--verbose"], ["status", "--json", "--verbose"], ["status"])]
    finally:
        faults.heal_network("verda")
    assert [r.returncode for r in runs[-3:]] == [4, 4, 4]
    assert "Traceback" in runs[-3].stderr  # --verbose really printed the exception
    assert "***" in runs[0].stdout  # plan shows that the secrets are set, masked
    for r in runs:
        for secret in secrets:
            assert secret not in r.stdout and secret not in r.stderr, r.args
    for host in HOSTS:
        h = lab.hosts[host]
        files = [p for p in workdir(lab, host).iterdir() if p.is_file() and p.name != ".env"]
        files += [h.sshd_log, h.dockerd_log]
        assert {p.name for p in files} >= {"audit.log", "deployed.json"}
        for p in files:
            text = p.read_text(errors="replace")
            assert not any(s in text for s in secrets), p
        for cid in hostsvc.docker(h, "ps", "-q").stdout.split():
            logs = hostsvc.docker(h, "logs", cid)
            assert not any(s in logs.stdout + logs.stderr for s in secrets), cid
    assert any(lab.secrets["REDIS_PASSWORD"] in workdir(lab, h).joinpath(".env").read_text() for h in HOSTS)


def test_files_on_the_hosts_are_private_to_the_login_user(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    for host in HOSTS:  # as an older run may have left them: folder 0755, upload marker gone
        workdir(lab, host).chmod(0o755)
        (workdir(lab, host) / "uploaded.sha256").unlink()
    res = invoke("start-all", "--hosts", str(inv))
    assert res.returncode == 0, res.stderr
    assert "uploading" in res.stderr
    for host in HOSTS:
        uid = pwd.getpwnam(lab.hosts[host].user).pw_uid
        wd = workdir(lab, host)
        st = wd.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, uid), host
        files = {p.name: p.stat() for p in wd.iterdir() if p.is_file()}
        assert {".env", "audit.log", "deployed.json", "uploaded.sha256"} <= set(files)
        for name, st in files.items():
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, uid), f"{host}:{name}"


def test_a_dual_server_plan_without_a_redis_password_is_refused(lab, tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("REDIS_PASSWORD=\nADMIN_PASSWORD=some-admin-password\n")
    secrets.chmod(0o600)  # a secrets file others can read is refused (issue 11)
    inv = lab.inventory(tmp_path, timeouts=FAST, secrets={"env_file": str(secrets)})
    line = 1 + next(i for i, text in enumerate(inv.read_text().splitlines()) if text.startswith("secrets:"))
    for task in ("plan", "start-all"):
        res = invoke(task, "--hosts", str(inv))
        assert res.returncode == ExitCode.CONFIG and "Traceback" not in res.stderr
        assert res.stderr.splitlines() == [
            f"{inv}:{line} secrets: REDIS_PASSWORD is empty (Redis across the tailnet must always require a "
            "password; set a non-empty value)"]


def test_redis_across_the_tailnet_requires_its_password(lab, deployed):
    inv = load_inventory(str(deployed))
    with Remote(target(inv, inv.host("verda"))) as verda:  # the worker's vantage point
        with verda.tunnel("100.64.0.1", 6379, 3) as sock:
            with pytest.raises((redis_py.AuthenticationError, redis_py.ResponseError), match="(?i)auth"):
                redis_client(sock, None, 3).ping()
        with verda.tunnel("100.64.0.1", 6379, 3) as sock:
            assert redis_client(sock, lab.secrets["REDIS_PASSWORD"], 3).ping() is True


# ---------------------------------------------------------------------------------------- audit
def test_audit_log_on_each_host_says_who_what_when_and_which_revision(lab, deployed, tmp_path):
    inv = fast_inventory(lab, tmp_path)
    logs = {h: workdir(lab, h) / "audit.log" for h in HOSTS}
    seen = {h: len(logs[h].read_text().splitlines()) for h in HOSTS}
    since = datetime.now(timezone.utc).replace(microsecond=0)
    assert invoke("stop-verda", "--hosts", str(inv)).returncode == 0
    assert invoke("start-all", "--hosts", str(inv)).returncode == 0
    rev = local_revision(REPO)
    config = json.loads(invoke("plan", "--json", "--hosts", str(inv)).stdout)["config_hash"]

    def lines(host):
        out = []
        for text in logs[host].read_text().splitlines()[seen[host]:]:
            at, *fields = text.split(" ")
            when = datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            out.append(dict(f.split("=", 1) for f in fields) | {"at": when})
        return out
    expected = {"by": who(), "rev": rev, "config": config, "mode": "dual-server"}
    verda, mello = lines("verda"), lines("mello")
    assert [(e["task"], e["result"]) for e in verda] == [("stop-verda", "stopped"), ("start-all", "changed")]
    assert [e["task"] for e in mello] == ["start-all"]  # stop-verda never touched the app host
    for entry in verda + mello:
        assert {k: entry[k] for k in expected} == expected
        assert since <= entry["at"] <= datetime.now(timezone.utc)
    deployed_json = json.loads((workdir(lab, "verda") / "deployed.json").read_text())
    assert (deployed_json["revision"], deployed_json["config_hash"], deployed_json["by"]) == (rev, config, who())


def test_each_host_keeps_its_own_salt_and_a_changed_secret_is_still_seen(lab, deployed, tmp_path):
    """Issue 18: the fingerprints are salted per host with a random salt kept on the host (never
    printed); diff and start-all still see a changed secret, and only its readers are recreated."""
    import re
    inv = fast_inventory(lab, tmp_path)
    salts = {}
    for host in HOSTS:
        path = workdir(lab, host) / "fingerprint.salt"
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, pwd.getpwnam(lab.hosts[host].user).pw_uid)
        salts[host] = path.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{32}", salts[host]), host
    assert salts["mello"] != salts["verda"]
    same = invoke("diff", "--hosts", str(inv))
    assert same.returncode == 0 and "mello: nothing would change" in same.stdout \
        and "verda: nothing would change" in same.stdout, same.stdout + same.stderr
    changed = {"ADMIN_PASSWORD": "a-new-admin-pw-" + os.urandom(4).hex(),
               "REDIS_PASSWORD": lab.secrets["REDIS_PASSWORD"]}
    try:
        res = invoke("diff", "--hosts", str(inv), env=changed)
        assert res.returncode == 0, res.stderr
        assert "recreate admin (ADMIN_PASSWORD changed)" in res.stdout and "verda: nothing would change" in res.stdout
        assert changed["ADMIN_PASSWORD"] not in res.stdout + res.stderr
        before = {c: running_id(lab, "mello", c) for c in ("admin", "redis", "queue-manager")}
        res = invoke("start-all", "--hosts", str(inv), env=changed)
        assert res.returncode == 0, res.stderr
        after = {c: running_id(lab, "mello", c) for c in before}
        assert after["admin"] != before["admin"]
        assert after["redis"] == before["redis"] and after["queue-manager"] == before["queue-manager"]
        status = invoke("status", "--json", "--no-probe", "--hosts", str(inv), env=changed)
        assert json.loads(status.stdout)["hosts"]["mello"]["deployed"]["in_sync"] is True, status.stdout
        outputs = [res, status] + [invoke(*args, "--hosts", str(inv), env=changed) for args in
                                   (["plan"], ["plan", "--json"], ["start-all", "--dry-run"], ["diff", "--json"])]
        for out in outputs:  # the salt is never printed
            assert not any(s in out.stdout + out.stderr for s in salts.values()), out.args
        assert {h: (workdir(lab, h) / "fingerprint.salt").read_text().strip() for h in HOSTS} == salts
    finally:
        back = invoke("start-all", "--hosts", str(inv))
        assert back.returncode == 0, back.stderr


def running_id(lab, host: str, service: str) -> str:
    out = hostsvc.docker(lab.hosts[host], "ps", "-q", "--filter", "label=com.docker.compose.project=comfyume",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    assert len(out) == 1, (host, service, out)
    return out[0]
