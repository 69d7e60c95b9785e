"""Each simulated host's own login user, SSH server and Docker engine."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from pathlib import Path

from .layout import LabHost
from .system import LabError, in_netns, kill_wait, read_pid, sh, wait_for

# Plugin folders where a docker client finds Compose v2 (the fault helper hides them per host).
COMPOSE_PLUGIN_DIRS = ("/usr/libexec/docker/cli-plugins", "/usr/local/lib/docker/cli-plugins",
                       "/usr/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins")


def ensure_user(host: LabHost, authorized_key: str) -> None:
    """A login user per host with its own home, so hosts share no files and no root .bashrc."""
    host.root.mkdir(parents=True, exist_ok=True)
    os.chmod(host.root, 0o755)
    try:
        pwd.getpwnam(host.user)
    except KeyError:
        sh(["useradd", "--no-create-home", "--home-dir", str(host.home), "--shell", "/bin/bash",
            "--user-group", host.user])
    # '*' instead of the locked '!': sshd without PAM refuses locked accounts even for keys.
    sh(["usermod", "-p", "*", host.user])
    ssh_dir = host.home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key.strip() + "\n")
    bashrc = host.home / ".bashrc"
    if not bashrc.exists():
        bashrc.write_text("# lab host login shell: intentionally empty\n")
    sh(["chown", "-R", f"{host.user}:{host.user}", str(host.home)])
    os.chmod(host.home, 0o750)
    os.chmod(ssh_dir, 0o700)
    os.chmod(ssh_dir / "authorized_keys", 0o600)


def remove_user(name: str) -> None:
    """Delete a lab login user. Its SSH sessions outlive a stopped sshd (an open connection,
    a ControlPersist master), and userdel refuses a user that still runs processes: end them."""
    for _ in range(20):
        try:
            pwd.getpwnam(name)
        except KeyError:  # already gone (removed concurrently, e.g. by a stand-in's own clean-up)
            break
        sh(["pkill", "-KILL", "-u", name], check=False)
        if sh(["userdel", name], check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        raise LabError(f"could not delete the lab user {name}: {sh(['userdel', name], check=False).stderr.strip()}")
    sh(["groupdel", name], check=False)


def ensure_host_key(host: LabHost) -> None:
    if not host.host_key.exists():
        new_host_key(host)


def new_host_key(host: LabHost) -> None:
    for p in (host.host_key, Path(str(host.host_key) + ".pub")):
        p.unlink(missing_ok=True)
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab-{host.name}", "-f", str(host.host_key)])


def host_public_key(host: LabHost) -> str:
    kind, blob = Path(str(host.host_key) + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def write_sshd_config(host: LabHost) -> None:
    path_env = f"{host.bin_dir}:/usr/local/bin:/usr/bin:/bin"
    host.bin_dir.mkdir(parents=True, exist_ok=True)
    host.sshd_config.write_text(f"""# sshd for lab host {host.name} (comfyume-fab lab)
ListenAddress {host.address}:22
HostKey {host.host_key}
PidFile {host.sshd_pid}
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {host.user}
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 100:30:200
LogLevel VERBOSE
SetEnv DOCKER_HOST={host.docker_host} PATH={path_env}
Subsystem sftp internal-sftp
""")


def start_sshd(host: LabHost) -> None:
    """A real OpenSSH server on port 22 of the host's address, in its own mount namespace
    (so a fault can hide the Compose plugin from this host alone)."""
    if read_pid(host.sshd_pid):
        return
    Path("/run/sshd").mkdir(exist_ok=True)
    host.run.mkdir(parents=True, exist_ok=True)
    sh(["/usr/sbin/sshd", "-t", "-f", str(host.sshd_config)])
    sh(in_netns(host.netns, ["unshare", "--mount", "--propagation", "private",
                              "/usr/sbin/sshd", "-f", str(host.sshd_config), "-E", str(host.sshd_log)]))
    wait_for(lambda: read_pid(host.sshd_pid), 10, f"sshd on {host.name}")
    wait_for(lambda: _listening(host), 10, f"sshd on {host.name} to listen on {host.address}:22")


def _listening(host: LabHost) -> bool:
    try:
        with socket.create_connection((host.address, 22), timeout=1):
            return True
    except OSError:
        return False


def stop_sshd(host: LabHost) -> None:
    pid = read_pid(host.sshd_pid)
    if pid:
        kill_wait(pid, 5)
    host.sshd_pid.unlink(missing_ok=True)


def sshd_mount_ns(host: LabHost) -> str:
    pid = read_pid(host.sshd_pid)
    if not pid:
        raise LabError(f"sshd of lab host {host.name} is not running")
    return f"/proc/{pid}/ns/mnt"


def start_dockerd(host: LabHost) -> None:
    """The host's own Docker engine: separate data-root, exec-root, socket, address pool."""
    if not host.engine or read_pid(host.dockerd_pid):
        return
    host.run.mkdir(parents=True, exist_ok=True)
    data = host.root / "docker"
    data.mkdir(parents=True, exist_ok=True)
    argv = in_netns(host.netns, [
        "dockerd", "--data-root", str(data), "--exec-root", str(host.run / "exec"),
        "--pidfile", str(host.dockerd_pid), "-H", host.docker_host, "--group", host.user,
        "--bip", host.docker_bip, "--default-address-pool", host.docker_pool,
        "--cgroup-parent", f"cfab-{host.name}", "--log-level", "warn",
        "--storage-driver", "overlay2",
        "--insecure-registry", LAB_REGISTRY])  # images: the lab's own registry (lab/registry.py), plain HTTP
    log = open(host.dockerd_log, "ab")
    import subprocess
    subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                     env=no_outside_registry_env())
    log.close()
    try:
        wait_for(lambda: docker(host, "version", "--format", "{{.Server.Version}}", check=False).returncode == 0,
                 60, f"the Docker engine of {host.name}", interval=0.25)
    except LabError:
        tail = host.dockerd_log.read_text(errors="replace")[-600:] if host.dockerd_log.exists() else ""
        raise LabError(f"the Docker engine of lab host {host.name} did not start: {tail}") from None


# A lab engine must never reach a registry outside the lab: every registry request goes through a
# proxy on a closed loopback port of the host's own namespace, so a pull of an outside image fails at
# once with "connection refused", and no DNS query leaves (the proxy would resolve the name). The lab
# tailnet (a registry on a lab host) is reached directly.
# In Swarm mode an engine also asks a registry on its own: the manager pins a service's image to a
# digest (daemon/cluster/services.go) and every task's executor pulls its image before it starts
# (daemon/cluster/executor/container/controller.go, Prepare); both are skipped when dockerd runs with
# DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (what moby's own integration tests set), so a lab task runs
# the image its engine already has, and no registry is asked.
CLOSED_PROXY = "http://127.0.0.1:9"
LAB_REGISTRY = "100.64.0.1:5000"  # lab/registry.py serves it on mello


def no_outside_registry_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env.update(HTTP_PROXY=CLOSED_PROXY, HTTPS_PROXY=CLOSED_PROXY, NO_PROXY="100.64.0.0/10,localhost,127.0.0.1",
               DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
    return env


def stop_dockerd(host: LabHost, timeout: float = 20) -> None:
    pid = read_pid(host.dockerd_pid)
    if pid:
        kill_wait(pid, timeout)
    host.dockerd_pid.unlink(missing_ok=True)


def docker(host: LabHost, *args: str, check: bool = True, timeout: float = 120, input: str | None = None):
    """Run the docker client against this host's engine (from this machine, as root)."""
    env = dict(os.environ, DOCKER_HOST=host.docker_host)
    return sh(["docker", *args], check=check, timeout=timeout, input=input, env=env)


def wipe_host_dirs(host: LabHost) -> None:
    for path in (host.root, host.run):
        if path.exists():
            _umount_below(path)
            shutil.rmtree(path, ignore_errors=True)


def _umount_below(path: Path) -> None:
    prefix = str(path)
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        sh(["umount", "-l", mnt], check=False)


def wait_gone(pid_paths: list[Path], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(read_pid(p) for p in pid_paths):
        time.sleep(0.1)
