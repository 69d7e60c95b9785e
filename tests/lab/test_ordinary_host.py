"""A host configured the ordinary way, not by the lab (issue 11 item 8): this machine itself, reached
over an sshd of its own on 127.0.0.1 (its own config and host key, started here), the Docker engine
on the DEFAULT socket /var/run/docker.sock (no DOCKER_HOST anywhere), and a login key that exists
ONLY in a running `ssh-agent` (ssh-add, then the file is deleted). single-server-cpu start-all,
status and stop-all pass against it.

The engine: when none answers on /var/run/docker.sock, one is started here on that socket with its
data in a temporary folder, no iptables rules and no default bridge (the machine's firewall and the
lab's network stay as they were), loaded from the lab's image cache tarball (it never pulls: no
registry is reachable), and stopped afterwards. Everything started or written is removed in finally
blocks. The `lab` fixture holds the machine-wide lab lock for the whole test."""
from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from comfyume_fab.lab import images
from tests.support import free_port, invoke, wait_for

pytestmark = pytest.mark.lab

DEFAULT_SOCK = Path("/var/run/docker.sock")


def plain_docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)


def engine_answers() -> bool:
    return DEFAULT_SOCK.exists() and plain_docker("version", "--format", "{{.Server.Version}}",
                                                  timeout=10).returncode == 0


def stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def engine(lab, tmp_path_factory):
    """The system engine on the default socket: the running one, or one started (and stopped) here."""
    if engine_answers():
        yield "already running"
        return
    root = tmp_path_factory.mktemp("system-engine")
    log = open(root / "dockerd.log", "ab")
    proc = subprocess.Popen(["dockerd", "-H", f"unix://{DEFAULT_SOCK}", "--data-root", str(root / "data"),
                             "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
                             "--iptables=false", "--bridge=none", "--log-level", "warn",
                             "--storage-driver", "overlay2"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(engine_answers, 60, "dockerd on /var/run/docker.sock")
        tar = images.cached_tarball()
        assert tar.exists(), f"the lab image cache {tar} is missing (the lab fixture builds it)"
        res = plain_docker("load", "-i", str(tar), timeout=300)
        assert res.returncode == 0, res.stderr
        yield "started by the test"
    finally:
        stop(proc)
        log.close()
        DEFAULT_SOCK.unlink(missing_ok=True)
        subprocess.run(["umount", "-R", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent(tmp_path):
    """A running ssh-agent holding a fresh key whose file is deleted: the agent is its only copy."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10, "ssh-agent")
        key = tmp_path / "agent-only-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "comfyume-fab ordinary host test",
                        "-f", str(key)], check=True, timeout=20)
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       capture_output=True, timeout=20)
        public = key.with_name(key.name + ".pub").read_text()
        key.unlink()
        key.with_name(key.name + ".pub").unlink()
        yield str(sock), public
    finally:
        stop(proc)


@pytest.fixture
def sshd(tmp_path, agent):
    """This machine's own sshd on 127.0.0.1:<free port>, its own config and host key; root logs in
    with the agent's key only (no password, no other key)."""
    folder = tmp_path / "sshd"
    folder.mkdir()
    host_key = folder / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=20)
    authorized = folder / "authorized_keys"
    authorized.write_text(agent[1])
    authorized.chmod(0o600)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
                      f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                      "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n")
    log = folder / "sshd.log"
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 15, "the test's sshd")
        known = folder / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_key.with_name(host_key.name + '.pub').read_text()}")
        yield port, known, log
    finally:
        stop(proc)


def test_single_server_cpu_on_this_machine_with_an_agent_key_and_the_default_engine(
        lab, engine, agent, sshd, tmp_path):
    port, known, sshd_log = sshd
    workdir = f"cfab-ordinary-{_random.token_hex(4)}"
    project = f"ordinary{_random.token_hex(3)}"
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"REDIS_PASSWORD={_random.token_urlsafe(12)}\nADMIN_PASSWORD={_random.token_urlsafe(12)}\n")
    secrets.chmod(0o600)
    empty_config = tmp_path / "ssh_config"
    empty_config.write_text("")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(yaml.safe_dump({
        "mode": "single-server-cpu", "project": project, "num_users": 1,
        "ports": {"redis": 16479, "queue_manager": 13100, "admin": 18180, "frontend_base": 18288,
                  "worker_comfyui": 18400},
        "health": {"interval": "1s", "start_period": "5s"},
        "timeouts": {"connect": 5, "health": 120, "redis": 3, "probe": 30},
        "worker": {"poll_interval": 1, "heartbeat_timeout": 60},
        "ssh": {"known_hosts": str(known), "config_file": str(empty_config)},
        "secrets": {"env_file": str(secrets)},
        "hosts": {"box": {"address": "127.0.0.1", "port": port, "user": "root", "roles": ["app", "worker"],
                          "workdir": workdir}},
    }, sort_keys=False))
    env = {"SSH_AUTH_SOCK": agent[0]}
    assert "DOCKER_HOST" not in os.environ
    home = Path(os.path.expanduser("~root"))
    try:
        res = invoke("start-all", "--hosts", str(inventory), env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        res = invoke("status", "--json", "--hosts", str(inventory), env=env)
        data = json.loads(res.stdout)
        assert res.returncode == 0, res.stdout + res.stderr
        failed = [c for c in data["checks"] if not c["ok"]]
        assert data["hosts"]["box"]["reachable"] and not failed, failed
        running = plain_docker("ps", "--filter", f"label=com.docker.compose.project={project}",
                               "--format", "{{.Names}}").stdout.split()
        assert len(running) >= 5, running  # redis, queue manager, admin, user001, worker on the default engine
        assert "Accepted publickey for root from 127.0.0.1" in sshd_log.read_text()
        assert "comfyume fab ordinary host test" not in res.stdout  # nothing about the key leaks into output
        res = invoke("stop-all", "--hosts", str(inventory), "--down", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert plain_docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                            "--format", "{{.Names}}").stdout.split() == []
    finally:
        for cid in plain_docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split():
            plain_docker("rm", "-f", cid)
        for net in plain_docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"
                                ).stdout.split():
            plain_docker("network", "rm", net)
        for vol in plain_docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"
                                ).stdout.split():
            plain_docker("volume", "rm", "-f", vol)
        shutil.rmtree(home / workdir, ignore_errors=True)
