"""The lab hosts behind the Verda API STAND-IN's instances (lab only): one whole lab host per
instance (dynhost: namespace on the lab tailnet, login user, Docker engine), which runs the
instance's startup script the way a fresh Verda instance runs it at first boot, then starts its
sshd with the host key the script installed.

The startup script runs as root in the host's network namespace, in a private mount namespace
where /etc/ssh and /root are folders of that lab host (`<host root>/instance/etc-ssh`, `.../root`),
/tmp and /var/tmp are private, and the rest of this machine's root file system is READ-ONLY (the lab
host is no VM: a script that installs packages or writes /usr/local fails, the instance is
`error`); the UTS namespace is private too (`hostname` = the lab host's name); HOME=/root,
DOCKER_HOST = the host's engine, and PATH starts with two shims (lab STAND-INs, written per host):
  - `tailscale` (in the host's bin folder, also on its SSH sessions' PATH): `up --authkey=K
    [--hostname=H] [--advertise-tags=T]` accepts K only when its SHA-256 is the stand-in's accepted
    key's (the key itself is never written here); the host's tailnet address is its lab address,
    which `tailscale ip -4` then prints; `status`, `down`, `logout`, `version` as expected.
  - `systemctl` (script only): logged to `instance/systemctl.log`, answers 0; `restart ssh` is
    honoured by starting the host's sshd once the script has ended (there is no systemd here).
Its output goes to `instance/startup-script.log`. A script that exits non-zero, or outlives the
timeout, leaves the host without sshd (the instance is `error`; deleting it removes the host).

A record file (JSON list of the host names made) lets `lab/verda.py` remove what a killed
stand-in left behind.

`python -m comfyume_fab.lab.verda_hosts CONFIG` runs the stand-in with these hosts (lab/verda.py
does): CONFIG is a JSON file (0600: it holds the credentials) {"listen", "port", "client_id",
"client_secret", "tailscale_authkey", "ready_file", "record_file", "knobs"}.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import dynhost, hostsvc
from .layout import LabHost
from .standins.verda_api import ProvisionFailed, authkey_digest, serve
from .system import LabError, sh

TAILSCALE_VERSION = "1.76.6-lab-standin"
REMOVAL_WAIT = 90.0  # s a new instance waits for a same-named deleted one's host to go


class LabHosts:
    """The Verda stand-in's provisioner (standins/verda_api.Provisioner)."""

    def __init__(self, authkey_sha256: str, record_file: Path):
        self.authkey_sha256 = authkey_sha256
        self.record_file = record_file
        self.lock = threading.Lock()
        self.reserved: set[str] = set()  # names of this stand-in's live hosts
        self.removing: set[str] = set()  # ... and of those being removed

    # -- names and the record ---------------------------------------------------------------
    def host_name(self, hostname: str, instance_id: str) -> str:
        """A lab host name for the instance: its hostname made a valid lab name (so the login user
        is cfab-<hostname>, predictable), waiting while a deleted instance's host of that name is
        still being removed; taken by a live host: `<name>-<id[:4]>`."""
        base = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:20].strip("-") or "instance"
        deadline = time.monotonic() + REMOVAL_WAIT
        while True:
            with self.lock:
                if base not in self.removing or time.monotonic() > deadline:
                    name = base
                    if name in self.reserved or name in self.removing or dynhost.find(name) is not None:
                        name = f"{base}-{instance_id[:4]}"
                    self.reserved.add(name)
                    return name
            time.sleep(0.2)

    def _record(self, name: str, present: bool) -> None:
        with self.lock:
            try:
                names = json.loads(self.record_file.read_text())
            except (OSError, ValueError):
                names = []
            names = [n for n in names if n != name] + ([name] if present else [])
            tmp = self.record_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(names))
            tmp.replace(self.record_file)

    # -- create -----------------------------------------------------------------------------
    def create(self, name: str, *, authorized_keys: str, script: str | None, fail: bool, timeout: float) -> dict:
        self._record(name, True)
        host = dynhost.add_host(name, "worker", start_ssh=False,
                                authorized_key=authorized_keys.strip() or "# no SSH key was given at create")
        inst = host.root / "instance"
        facts = {"lab_host": name, "address": host.address, "user": host.user, "netns": host.netns,
                 "script_exit": None, "tailscale": None}
        prepare(host, self.authkey_sha256)
        if fail:
            facts["script_exit"] = 1
            exc = ProvisionFailed("the startup script failed (lab knob fail_next_script)")
            exc.facts = facts
            raise exc
        if script is not None:
            code, detail = run_script(host, script, timeout)
            facts["script_exit"] = code
            facts["tailscale"] = tailscale_state(host)
            if code != 0:
                exc = ProvisionFailed(f"the startup script {detail}; its output: {inst / 'startup-script.log'}")
                exc.facts = facts
                raise exc
        install_host_key(host)
        dynhost.forget_address(host.address)  # a re-rented instance often gets a deleted one's address
        dynhost.start_sshd(host)
        return facts

    def power(self, name: str, on: bool) -> None:
        host = _find(name)
        if on:
            hostsvc.start_dockerd(host)
            dynhost.start_sshd(host)
        else:
            hostsvc.stop_sshd(host)
            hostsvc.stop_dockerd(host)

    def remove(self, name: str) -> None:
        with self.lock:
            self.removing.add(name)
        try:
            dynhost.remove_host(name)
            self._record(name, False)
        finally:
            with self.lock:
                self.removing.discard(name)
                self.reserved.discard(name)


def _find(name: str) -> LabHost:
    host = dynhost.find(name)
    if host is None:
        raise LabError(f"the lab has no host {name!r} (removed behind the Verda stand-in's back?)")
    return host


# ----------------------------------------------------------------------------- the instance's folders
def folders(host: LabHost) -> dict[str, Path]:
    inst = host.root / "instance"
    return {"inst": inst, "etc_ssh": inst / "etc-ssh", "root": inst / "root", "sbin": inst / "sbin",
            "tailscale": inst / "tailscale", "script": inst / "startup-script",
            "log": inst / "startup-script.log"}


def prepare(host: LabHost, authkey_sha256: str) -> None:
    """The instance's /etc/ssh (this machine's sshd_config and ssh_config, never its host keys),
    /root, and the shims."""
    f = folders(host)
    for key in ("inst", "etc_ssh", "sbin", "tailscale"):
        f[key].mkdir(parents=True, exist_ok=True)
        os.chmod(f[key], 0o755)
    f["root"].mkdir(exist_ok=True)
    os.chmod(f["root"], 0o700)
    (f["etc_ssh"] / "sshd_config.d").mkdir(exist_ok=True)
    for name in ("sshd_config", "ssh_config"):
        if Path("/etc/ssh", name).is_file():
            shutil.copy(Path("/etc/ssh", name), f["etc_ssh"] / name)
    accepted = f["tailscale"] / "accepted.sha256"
    accepted.write_text(authkey_sha256 + "\n")
    os.chmod(accepted, 0o600)
    host.bin_dir.mkdir(parents=True, exist_ok=True)
    _write_exec(host.bin_dir / "tailscale", TAILSCALE_SHIM.format(
        name=host.name, address=host.address, index=host.index, state=f["tailscale"] / "state.json",
        accepted=accepted, version=TAILSCALE_VERSION))
    _write_exec(f["sbin"] / "systemctl", SYSTEMCTL_SHIM.format(name=host.name, log=f["inst"] / "systemctl.log"))


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o755)


def run_script(host: LabHost, script: str, timeout: float) -> tuple[int, str]:
    """Run the startup script as the instance would at first boot; (exit code, what happened)."""
    f = folders(host)
    if not script.startswith("#!"):
        script = "#!/bin/sh\n" + script
    f["script"].write_text(script)
    os.chmod(f["script"], 0o700)
    argv = ["nsenter", f"--net={host.netns_path}", "unshare", "--mount", "--uts", "--propagation", "private",
            "/bin/sh", "-c", SANDBOX, "verda-startup", str(f["etc_ssh"]), str(f["root"]), str(f["inst"]),
            host.name, str(f["script"])]
    env = hostsvc.no_outside_registry_env()
    env = {k: v for k, v in env.items() if k.endswith("_PROXY") or k.endswith("_proxy")}
    env.update(PATH=f"{f['sbin']}:{host.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               HOME="/root", USER="root", LOGNAME="root", LANG="C.UTF-8", DOCKER_HOST=host.docker_host,
               TERM="dumb")
    with open(f["log"], "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return 124, f"did not finish within {timeout:.0f} s"
    return code, f"exited with status {code}"


# The script's view of this machine: /etc/ssh and /root are the instance's own folders, /tmp and
# /var/tmp private, the instance folder (tailscale state, systemctl log) writable, the hostname the
# lab host's; the rest of the root file system READ-ONLY, so a script that would change this
# machine (apt-get, files in /usr/local or /etc) fails instead, and the instance goes to `error`.
SANDBOX = """set -e
mount --bind "$1" /etc/ssh
mount --bind "$2" /root
mount --bind "$3" "$3"
mount -t tmpfs -o mode=1777 verda-tmp /tmp
mount -t tmpfs -o mode=1777 verda-tmp /var/tmp
mount -o remount,bind,ro /
hostname "$4"
cd /root
exec "$5"
"""


def install_host_key(host: LabHost) -> None:
    """The host key the script left at /etc/ssh/ssh_host_ed25519_key becomes the key sshd presents
    (its public half derived from it, so sshd shows exactly that key); none: a key made now."""
    key = folders(host)["etc_ssh"] / "ssh_host_ed25519_key"
    if not key.is_file():
        return
    host.host_key.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(key, host.host_key)
    os.chmod(host.host_key, 0o600)
    pub = sh(["ssh-keygen", "-y", "-f", str(host.host_key)]).stdout.strip()
    Path(str(host.host_key) + ".pub").write_text(pub + "\n")


def tailscale_state(host: LabHost) -> dict | None:
    try:
        return json.loads((folders(host)["tailscale"] / "state.json").read_text())
    except (OSError, ValueError):
        return None


TAILSCALE_SHIM = '''#!/usr/bin/python3
"""STAND-IN for the tailscale CLI on lab host {name} (comfyume lab only; not Tailscale)."""
import hashlib, json, os, sys

ADDRESS, INDEX, NAME = "{address}", {index}, "{name}"
STATE, ACCEPTED, VERSION = "{state}", "{accepted}", "{version}"


def state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def option(args, *names):
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def up(args):
    key = option(args, "--authkey", "--auth-key")
    if key is None:
        if state():
            return 0
        sys.stderr.write("lab tailscale: no --authkey given; this lab host cannot log in interactively\\n")
        return 1
    if key.startswith("file:"):
        with open(key[5:]) as f:
            key = f.read().strip()
    if os.geteuid() != 0:
        sys.stderr.write("Access denied: up must be run as root\\n")
        return 1
    with open(ACCEPTED) as f:
        if hashlib.sha256(key.encode()).hexdigest() != f.read().strip():
            sys.stderr.write("backend error: invalid key: API key does not exist\\n")
            return 1
    new = {{"ip": ADDRESS, "hostname": option(args, "--hostname") or NAME,
           "tags": [t for t in (option(args, "--advertise-tags") or "").split(",") if t]}}
    with open(STATE + ".tmp", "w") as f:
        json.dump(new, f)
    os.chmod(STATE + ".tmp", 0o644)
    os.replace(STATE + ".tmp", STATE)
    return 0


def main(args):
    cmd, rest = (args[0], args[1:]) if args else ("status", [])
    s = state()
    if cmd == "up":
        return up(rest)
    if cmd == "version":
        print(VERSION)
        return 0
    if cmd == "ip":
        if not s:
            sys.stderr.write("no current Tailscale IPs; state: NeedsLogin\\n")
            return 1
        v6 = "fd7a:115c:a1e0::%x" % INDEX
        print(v6 if "-6" in rest else ADDRESS)
        if not ("-4" in rest or "-6" in rest or "-1" in rest):
            print(v6)
        return 0
    if cmd == "status":
        if "--json" in rest:
            print(json.dumps({{"BackendState": "Running" if s else "NeedsLogin",
                              "Self": {{"HostName": s["hostname"], "TailscaleIPs": [ADDRESS]}} if s else None}}))
            return 0
        if not s:
            print("Logged out.")
            return 1
        print("%s  %s  tagged-devices  linux  -" % (ADDRESS, s["hostname"]))
        return 0
    if cmd in ("down", "logout"):
        if os.geteuid() != 0:
            sys.stderr.write("Access denied\\n")
            return 1
        if cmd == "logout" and os.path.exists(STATE):
            os.unlink(STATE)
        return 0
    sys.stderr.write("lab tailscale: %r is not simulated; nothing done\\n" % cmd)
    return 0


sys.exit(main(sys.argv[1:]))
'''

SYSTEMCTL_SHIM = '''#!/bin/sh
# STAND-IN for systemctl on lab host {name} (comfyume lab only): there is no systemd here. Logged;
# `restart ssh` is honoured by the Verda stand-in starting this host's sshd after the script.
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) systemctl $*" >> "{log}"
case "$1" in
  is-active) echo active ;;
  is-enabled) echo enabled ;;
esac
exit 0
'''


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    hosts = LabHosts(authkey_digest(config["tailscale_authkey"]), Path(config["record_file"]))
    serve(config, hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
