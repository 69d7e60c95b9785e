"""Authentication the way OpenSSH does it, against the lab's real sshd and a real ssh-agent:
agent keys, passphrase-protected files through the agent, IdentitiesOnly, and a refusal that
names every key offered. No mock: the agent is OpenSSH's own `ssh-agent`, the keys `ssh-keygen`'s."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from comfyume_fab.errors import ExitCode, UnreachableError
from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote

pytestmark = pytest.mark.lab


class Agent:
    """A real `ssh-agent` on its own socket, stopped by `close()`."""

    def __init__(self, folder: Path):
        self.sock = str(folder / "agent.sock")
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert time.monotonic() < deadline and self.proc.poll() is None, "ssh-agent did not start"
            time.sleep(0.05)

    def add(self, key: Path) -> None:
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": self.sock}, check=True,
                       capture_output=True, timeout=20)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME (no ~/.ssh/id_*) and no agent unless a test starts one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


@pytest.fixture
def agent(tmp_path, monkeypatch, home):
    a = Agent(tmp_path)
    monkeypatch.setenv("SSH_AUTH_SOCK", a.sock)
    try:
        yield a
    finally:
        a.close()


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", f"test {path.name}", "-f",
                    str(path)], check=True, timeout=20)
    return path


def copy_key(lab, path: Path) -> Path:
    shutil.copy(lab.key, path)
    os.chmod(path, 0o600)
    path.with_name(path.name + ".pub").write_text(
        subprocess.run(["ssh-keygen", "-y", "-f", str(path)], check=True, capture_output=True, text=True).stdout)
    return path


def target(lab, tmp_path, ssh_config: str = "", **kw) -> Target:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config)
    h = lab.hosts["verda"]
    return Target("verda", h.address, user=h.user, known_hosts=str(lab.known_hosts), ssh_config=str(cfg),
                  connect_timeout=5, **kw)


def login_fails(t: Target) -> str:
    with pytest.raises(UnreachableError) as info:
        Remote(t).open()
    assert info.value.code == ExitCode.UNREACHABLE == 3
    return str(info.value)


def test_a_key_held_only_by_ssh_agent_logs_in(lab, tmp_path, agent):
    key = copy_key(lab, tmp_path / "only-in-agent")
    agent.add(key)
    key.unlink()
    key.with_name(key.name + ".pub").unlink()
    with Remote(target(lab, tmp_path)) as r:
        assert r.run("id -un").stdout.strip() == lab.hosts["verda"].user


def test_a_passphrase_key_is_used_through_the_agent_and_named_without_it(lab, tmp_path, home, monkeypatch):
    key = copy_key(lab, tmp_path / "id_pass")
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "a passphrase", "-f", str(key)], check=True,
                   capture_output=True, timeout=20)
    # no agent: the file cannot be used, and the message says why and what to do
    text = login_fails(target(lab, tmp_path, identity_file=str(key)))
    assert f"{key}: protected by a passphrase and not loaded in ssh-agent" in text, text
    assert "no key was offered" in text and "ssh-add" in text, text
    # the same key loaded in an agent (ssh-add asked its passphrase there): the login works
    a = Agent(tmp_path)
    try:
        a.add(copy_key(lab, tmp_path / "plain"))
        monkeypatch.setenv("SSH_AUTH_SOCK", a.sock)
        with Remote(target(lab, tmp_path, identity_file=str(key))) as r:
            assert r.run("true").ok
    finally:
        a.close()


def test_identities_only_keeps_the_agent_to_the_named_files(lab, tmp_path, agent):
    agent.add(copy_key(lab, tmp_path / "lab-key"))  # the key the host accepts, in the agent
    other = keygen(tmp_path / "other")
    config = f"Host *\n  IdentityFile {other}\n"
    with Remote(target(lab, tmp_path, config)) as r:  # without IdentitiesOnly the agent key is tried
        assert r.run("true").ok
    text = login_fails(target(lab, tmp_path, config + "  IdentitiesOnly yes\n"))
    assert f"offered {other} (ssh-ed25519 SHA256:" in text and "refused by the server" in text, text
    assert "1 other ssh-agent key(s) not offered (IdentitiesOnly yes)" in text, text
    assert "ssh-agent key" not in text.split("not offered")[0], text


def test_a_refusal_names_each_key_offered_and_why(lab, tmp_path, agent):
    stranger = keygen(tmp_path / "stranger")
    agent.add(stranger)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(stranger)], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    unusable = tmp_path / "not-a-key"
    unusable.write_text("hello\n")
    text = login_fails(target(lab, tmp_path, identity_file=str(unusable)))
    user = lab.hosts["verda"].user
    assert text.startswith(f"host verda, step connect: SSH login as {user}@{lab.hosts['verda'].address} "
                           "was refused: offered ssh-agent key ssh-ed25519 " + fingerprint), text
    assert "(test stranger): refused by the server" in text, text
    assert f"not offered: {unusable}: not a private key" in text, text
    assert "\n" not in text


def test_no_agent_and_no_key_says_so(lab, tmp_path, home):
    text = login_fails(target(lab, tmp_path))
    assert "no key was offered (no ssh-agent: SSH_AUTH_SOCK is not set, and no identity file was found)" \
        in text, text
