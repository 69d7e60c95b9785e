"""Bad input (issue 6): every mistake in hosts.yaml, a secret or a file it names is rejected with
exit 2 and exact one-line messages (`file:line key.path: what (hint)`) BEFORE any host is touched:
the lab hosts' sshd logs record no new connection. Values with shell metacharacters are either
rejected, or -- secrets, which must allow them -- passed through quoted so that nothing executes.
"""
from __future__ import annotations

import base64
import http.client
import subprocess
from pathlib import Path

import pytest
import redis as redis_py

from comfyume_fab.checks.links import redis_client
from comfyume_fab.errors import ExitCode
from comfyume_fab.inventory import load_inventory
from comfyume_fab.lab import hostsvc
from comfyume_fab.host.ssh.remote import Remote
from comfyume_fab.host.session import target
from tests.support import INVOKE, REPO, invoke

pytestmark = pytest.mark.lab

BASE = """\
mode: dual-server
num_users: 3
timeouts: {{connect: 3, health: 20, redis: 2, probe: 5}}
ssh:
  known_hosts: {known}
secrets:
  env_file: {secrets}
hosts:
  mello:
    address: 100.64.0.1
    user: cfab-mello
    identity_file: {key}
    tailscale_ip: 100.64.0.1
    roles: [app]
    workdir: comfyume
  verda:
    address: 100.64.0.2
    user: cfab-verda
    identity_file: {key}
    tailscale_ip: 100.64.0.2
    roles: [worker]
    workdir: comfyume
"""
PATH_HINT = "check the path and its permissions, or remove identity_file to let ssh_config choose the key"
WORKDIR_HINT = ("letters, digits and . _ / ~ - only, no '..', not starting with '-'; "
                "a relative path starts at the login user's home")
ADDRESS_HINT = "letters, digits, '-', '.' and '_' only, not starting with '-'"
NAME_HINT = "use lowercase letters, digits, '-' and '_', starting with a letter or digit"
UNSAFE = ("the env file and the Redis config cannot carry single quotes, double quotes, backslashes, newlines "
          "or other control characters safely; choose a value without them")

# name: ({line number: replacement text, or "+text" to insert after that line}, [expected lines])
CASES = {
    "malformed-yaml": ({10: "    address: [100.64.0.1"}, [
        "{path}:11: malformed YAML: expected ',' or ']', but got ':' while parsing a flow sequence (close each "
        "'[' with ']' and each '{{' with '}}', and separate items with ', ')"]),
    "unknown-key-typo": ({3: "timeouts: {{conect: 3, health: 20, redis: 2, probe: 5}}"}, [
        "{path}:3 timeouts.conect: unknown key 'conect' (did you mean 'connect'?)"]),
    "unknown-host-key-typo": ({12: "    identity_fiel: {key}"}, [
        "{path}:12 hosts.mello.identity_fiel: unknown key 'identity_fiel' (did you mean 'identity_file'?)"]),
    "unknown-top-key": ({2: "num_user: 3"}, [
        "{path}:2 num_user: unknown key 'num_user' (did you mean 'num_users'?)"]),
    "wrong-type-int": ({2: "num_users: three"}, [
        "{path}:2 num_users: expected an integer, got a string 'three' (e.g. num_users: 20)"]),
    "wrong-type-bool-port": ({10: "+    port: true"}, [
        "{path}:11 hosts.mello.port: expected an integer, got a boolean True (e.g. port: 22)"]),
    "wrong-type-roles": ({21: "    roles: worker"}, [
        "{path}:21 hosts.verda.roles: expected a list, got a string 'worker' (e.g. roles: [worker])"]),
    "duplicate-host": ({22: "+  verda:\n    address: 100.64.0.3\n    roles: [worker]"}, [
        "{path}:23 hosts.verda: duplicate host 'verda', first defined on line 16 (give each host a unique name)"]),
    "dual-server-app-and-worker-on-one-host": ({14: "    roles: [app, worker]"}, [
        "{path}:14 hosts.mello.roles: mode dual-server runs the worker on its own host, but mello has roles "
        "[app, worker] (give it roles: [app] and the worker another host, or use mode single-server-gpu)"]),
    "single-server-with-two-hosts": ({1: "mode: single-server-gpu"}, [
        "{path}:8 hosts: mode single-server-gpu runs everything on one host, found 2 hosts: mello, verda (list "
        "one host with roles: [app, worker], or use mode dual-server)"]),
    "gpu-required-on-the-app-host": ({14: "+    gpu: required"}, [
        "{path}:15 hosts.mello.gpu: gpu: required on mello, which has no worker role (only the worker uses a GPU; "
        "write gpu: none, or add worker to roles)"]),
    "port-out-of-range": ({2: "+ports: {{redis: 70000}}"}, [
        "{path}:3 ports.redis: 70000 is out of range (expected a port from 1 to 65535)"]),
    "ssh-port-zero": ({10: "+    port: 0"}, [
        "{path}:11 hosts.mello.port: 0 is out of range (expected a port from 1 to 65535)"]),
    "address-with-shell-command": ({10: "    address: 'mello; rm -rf ~'"}, [
        "{path}:10 hosts.mello.address: 'mello; rm -rf ~' is not a hostname, IP address or ssh_config alias "
        f"({ADDRESS_HINT})"]),
    "address-that-is-an-ssh-option": ({10: "    address: '-oProxyCommand=touch /tmp/cfab-pwned'"}, [
        "{path}:10 hosts.mello.address: '-oProxyCommand=touch /tmp/cfab-pwned' is not a hostname, IP address or "
        f"ssh_config alias ({ADDRESS_HINT})"]),
    "tailscale-ip-not-an-ip": ({13: "    tailscale_ip: 100.64.0.300"}, [
        "{path}:13 hosts.mello.tailscale_ip: '100.64.0.300' is not an IP address (run 'tailscale ip -4' on that "
        "host and copy its address)"]),
    "workdir-with-shell-command": ({15: "    workdir: 'comfyume; rm -rf ~'"}, [
        f"{{path}}:15 hosts.mello.workdir: 'comfyume; rm -rf ~' is not a safe folder name ({WORKDIR_HINT})"]),
    "workdir-with-substitution": ({15: "    workdir: comfyume$(touch /tmp/cfab-pwned)"}, [
        "{path}:15 hosts.mello.workdir: 'comfyume$(touch /tmp/cfab-pwned)' is not a safe folder name "
        f"({WORKDIR_HINT})"]),
    "workdir-with-quote-and-newline": ({15: '    workdir: "comfy\'ume\\nx"'}, [
        f"{{path}}:15 hosts.mello.workdir: 'comfy'ume\\nx' is not a safe folder name ({WORKDIR_HINT})"]),
    "worker-id-with-substitution": ({22: "+    worker_id: w$(id)"}, [
        f"{{path}}:23 hosts.verda.worker_id: worker id 'w$(id)' is not allowed ({NAME_HINT})"]),
    "user-with-semicolon": ({18: "    user: cfab-verda;id"}, [
        "{path}:18 hosts.verda.user: 'cfab-verda;id' is not a valid login name (letters, digits, '.', '_' and "
        "'-', not starting with '-')"]),
    "project-with-backticks": ({2: "+project: comfy`id`"}, [
        f"{{path}}:3 project: project name 'comfy`id`' is not allowed ({NAME_HINT})"]),
    "identity-file-missing": ({12: "    identity_file: /nonexistent/key"}, [
        f"{{path}}:12 hosts.mello.identity_file: '/nonexistent/key' does not exist ({PATH_HINT})"]),
    "identity-file-is-a-folder": ({12: "    identity_file: /tmp"}, [
        f"{{path}}:12 hosts.mello.identity_file: '/tmp' is a directory, not a file ({PATH_HINT})"]),
    "probe-workflow-not-json": ({2: "+probe: {{workflow: probe.json}}"}, [
        "{path}:3 probe.workflow: probe.json:1: not valid JSON: Expecting property name enclosed in double quotes "
        "(export it from ComfyUI with 'Export (API)')"]),
}


def connections(lab) -> dict[str, int]:
    """SSH connections each lab host's sshd has logged (LogLevel VERBOSE logs every one)."""
    out = {}
    for name in ("mello", "verda"):
        log = lab.hosts[name].sshd_log
        out[name] = log.read_text(errors="replace").count("Connection from") if log.exists() else 0
    return out


def write(lab, tmp_path: Path, edits: dict[int, str], secrets: str | None = None) -> Path:
    fmt = dict(known=lab.known_hosts, secrets=secrets or lab.dir / "secrets.env", key=lab.key)
    lines = BASE.format(**fmt).splitlines()
    out = []
    for number, line in enumerate(lines, start=1):
        new = edits.get(number)
        if new is None:
            out.append(line)
        elif new.startswith("+"):
            out += [line, *new[1:].format(**fmt).split("\n")]
        else:
            out.append(new.format(**fmt))
    path = tmp_path / "hosts.yaml"
    path.write_text("\n".join(out) + "\n")
    (tmp_path / "probe.json").write_text('{"1": {not json\n')
    return path


def rejected(lab, res, expected: list[str], path: Path, before: dict[str, int]) -> None:
    """Exit 2, exactly the expected lines (each one line), no traceback, no host touched."""
    assert "Traceback" not in res.stdout + res.stderr
    assert res.returncode == ExitCode.CONFIG, res.stdout + res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines() == [e.format(path=path) for e in expected]
    assert connections(lab) == before, "a host was contacted before the inventory was validated"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("task", ["start-all", "status"])
def test_bad_inventory_is_rejected_before_any_host_is_touched(lab, tmp_path, case, task):
    edits, expected = CASES[case]
    path = write(lab, tmp_path, edits)
    before = connections(lab)
    res = invoke(task, "--hosts", str(path))
    rejected(lab, res, expected, path, before)


def test_missing_secret(lab, tmp_path):
    secrets = tmp_path / "only-redis.env"
    secrets.write_text("REDIS_PASSWORD=some-password\n")
    secrets.chmod(0o600)  # a secrets file others can read is refused (issue 11)
    path = write(lab, tmp_path, {}, secrets=str(secrets))
    before = connections(lab)
    res = invoke("start-all", "--hosts", str(path))
    rejected(lab, res, [f"{{path}}:6 secrets: ADMIN_PASSWORD is not set (export ADMIN_PASSWORD=... or add it to "
                        f"{secrets})"], path, before)


@pytest.mark.parametrize("value", ["it's", 'say "x"', "back\\slash", "new\nline"])
def test_secret_that_cannot_be_carried_safely_is_rejected(lab, tmp_path, value):
    path = write(lab, tmp_path, {})
    before = connections(lab)
    res = invoke("start-all", "--hosts", str(path), env={"REDIS_PASSWORD": value})
    rejected(lab, res, [f"{{path}}:6 secrets: REDIS_PASSWORD contains a character that cannot be used ({UNSAFE})"],
             path, before)
    assert value not in res.stderr


def test_unreadable_identity_file(lab, tmp_path):
    """Root reads every file; run the real CLI without root's override of file permissions."""
    key = tmp_path / "someone-elses-key"
    key.write_bytes(lab.key.read_bytes())
    key.chmod(0o000)
    path = write(lab, tmp_path, {12: f"    identity_file: {key}"})
    before = connections(lab)
    res = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", INVOKE, "start-all",
                          "--hosts", str(path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    rejected(lab, res, [f"{{path}}:12 hosts.mello.identity_file: '{key}' is not readable by this user "
                        f"({PATH_HINT})"], path, before)


def test_an_identity_file_that_is_not_a_key_names_the_file_not_sshd(lab, tmp_path):
    """Readable but not a private key: only SSH can tell (exit 3 at connect), and it says which file."""
    key = tmp_path / "id_ed25519.pub"
    key.write_text((lab.key.parent / (lab.key.name + ".pub")).read_text())
    path = write(lab, tmp_path, {19: f"    identity_file: {key}"})
    res = invoke("start-all", "--hosts", str(path), env={"SSH_AUTH_SOCK": ""})  # no agent to fall back on
    assert "Traceback" not in res.stderr and res.returncode == ExitCode.UNREACHABLE
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: start-all: host verda, step connect: SSH login as cfab-verda@100.64.0.2 was "
                           "refused: no key was offered"), line
    assert f"not offered: {key}: not a private key this tool can read (a .pub file, or another file?)" in line, line
    assert line.endswith("(identity_file in hosts.yaml (or IdentityFile in ssh_config) must be a private key file "
                         "(e.g. ~/.ssh/id_ed25519), not a .pub or another file)"), line


# ---------------------------------------------------- secrets with metacharacters: deployed, not run
REDIS_PW = "x$(touch /tmp/cfab-pwned-$$)y;z"
ADMIN_PW = "p`touch /tmp/cfab-pwned-admin`&|<>*?~!{}#"


def _pwned(lab) -> list[str]:
    found = [str(p) for p in Path("/tmp").glob("cfab-pwned*")]
    for name in ("mello", "verda"):
        h = lab.hosts[name]
        for cid in hostsvc.docker(h, "ps", "-q", "--filter", "label=com.docker.compose.project=comfyume").stdout.split():
            res = hostsvc.docker(h, "exec", cid, "sh", "-c", "ls -d /tmp/cfab-pwned* / 2>/dev/null", check=False)
            found += [f"{name}:{cid[:12]}:{p}" for p in res.stdout.split() if p != "/"]
        found += [str(p) for p in (h.home).rglob("cfab-pwned*")]
    return found


def test_secrets_with_shell_metacharacters_deploy_and_nothing_executes(lab, deployed, tmp_path):
    inv_path = lab.inventory(tmp_path, timeouts={"connect": 3, "health": 30, "redis": 2, "probe": 10})
    env = {"REDIS_PASSWORD": REDIS_PW, "ADMIN_PASSWORD": ADMIN_PW}
    assert _pwned(lab) == []
    try:
        res = invoke("start-all", "--hosts", str(inv_path), "--yes", env=env)  # a new Redis password: --yes
        assert res.returncode == 0, res.stderr
        assert REDIS_PW not in res.stdout + res.stderr and ADMIN_PW not in res.stdout + res.stderr
        assert _pwned(lab) == []  # nothing executed, on this machine, the hosts or in any container
        st = invoke("status", "--hosts", str(inv_path), env=env)
        assert st.returncode == 0, st.stdout  # the worker's .env carries it intact: Redis accepts it
        inv = load_inventory(str(inv_path), environ=env)
        with Remote(target(inv, inv.host("verda"))) as verda:
            with verda.tunnel("100.64.0.1", 6379, 3) as sock:  # from the worker's vantage point
                assert redis_client(sock, REDIS_PW, 3).ping() is True
            with verda.tunnel("100.64.0.1", 6379, 3) as sock:
                with pytest.raises(redis_py.AuthenticationError):
                    redis_client(sock, lab.secrets["REDIS_PASSWORD"], 3).ping()
        with Remote(target(inv, inv.host("mello"))) as mello:
            for password, want in ((ADMIN_PW, 200), ("wrong", 401)):
                auth = base64.b64encode(f"admin:{password}".encode()).decode()
                status, _ = _get(mello, 8080, "/", auth)
                assert status == want
        assert _pwned(lab) == []
    finally:
        for p in Path("/tmp").glob("cfab-pwned*"):
            p.unlink()
        # the lab's own Redis password back (a changed Redis password needs --yes), for the tests after this one
        invoke("start-all", "--hosts", str(inv_path), "--yes")
        back = invoke("start-all", "--hosts", str(inv_path))
        assert back.returncode == 0, back.stderr


def _get(remote, port: int, path: str, basic: str):
    with remote.tunnel("127.0.0.1", port, 5) as sock:
        sock.settimeout(5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.sock = sock
        conn.request("GET", path, headers={"Authorization": f"Basic {basic}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
