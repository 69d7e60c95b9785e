"""The lab's git server: a bare repository shaped like the team's `comfyume`, served over SSH by
mello's own sshd, that every lab host reads with its own deploy key.

- The repository lives in mello's login home (`~/git/comfyume.git`); each lab host's login user
  gets a deploy key (`~/.ssh/id_ed25519`) authorized on mello with `restrict` and a forced
  `git-shell` command (git access only, no shell, no forwarding), and mello's host key in its
  `~/.ssh/known_hosts` (strict checking: nothing is accepted on first use).
- Branches `mello-track` and `verda-track`; folders `queue-manager/`, `admin/`,
  `comfyui-frontend/` and `comfyui-worker/`, each a Dockerfile that builds the lab's labelled
  stand-in `FROM` the lab's base image, which `ensure_base` puts on every engine (imported from
  the cached Debian root filesystem: no registry, no internet).
- `commit(branch, path, text)` adds a commit as the team would (a push from a laptop).
- `hide_git(host)` / `restore_git(host)`: git missing for that host's SSH sessions only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from . import hostsvc, images
from .layout import CACHE_ROOT, LabHost
from .system import sh

SERVER = "mello"
REPO_REL = "git/comfyume.git"
BRANCHES = ("mello-track", "verda-track")
# folder -> (stand-in script, what it stands in for)
FOLDERS = {
    "queue-manager": ("queue_manager.py", "queue-manager"),
    "admin": ("admin.py", "admin"),
    "comfyui-frontend": ("frontend.py", "frontend (ComfyUI UI)"),
    "comfyui-worker": ("worker.py", "worker (ComfyUI inference API)"),
}
KEY_MARK = "comfyume-lab-deploy-key"


def server(hosts: list[LabHost]) -> LabHost:
    return next(h for h in hosts if h.name == SERVER)


def url(hosts: list[LabHost]) -> str:
    s = server(hosts)
    return f"ssh://{s.user}@{s.address}/~/{REPO_REL}"


def repo_path(hosts: list[LabHost]) -> Path:
    return server(hosts).home / REPO_REL


def _git(*args: str, cwd: Path | None = None, check: bool = True,
         extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(extra_env or {}), "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@comfyume.invalid", "GIT_COMMITTER_NAME": "lab",
           "GIT_COMMITTER_EMAIL": "lab@comfyume.invalid", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    # root works on repositories owned by the lab users: trust them explicitly (git >= 2.35.2)
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, capture_output=True, text=True, check=check,
                          timeout=60)


def dockerfile(script: str, what: str) -> str:
    label = images.STANDIN_NOTE.format(svc=what)
    return "\n".join([f"FROM {images.BASE}", f"COPY {script} common.py /opt/standins/",
                      f"LABEL org.comfyume.lab={json.dumps(label)}",
                      f"CMD {json.dumps(['python3', '-u', '/opt/standins/' + script])}", ""])


def ensure(hosts: list[LabHost], say: Callable[[str], None] = print, deploy_keys_for=None) -> str:
    """The repository (created once), deploy keys and known_hosts for `deploy_keys_for` (default:
    every host), and the base image on every engine. Returns the repository's URL."""
    srv = server(hosts)
    bare = repo_path(hosts)
    if not (bare / "HEAD").exists():
        say(f"lab: git server: a comfyume-shaped repository on {srv.name} ({url(hosts)})")
        _create(bare)
    sh(["chown", "-R", f"{srv.user}:{srv.user}", str(bare.parent)])
    for host in hosts if deploy_keys_for is None else deploy_keys_for:
        _deploy_key(host, srv)
    ensure_base([h for h in hosts if h.engine])
    return url(hosts)


def _create(bare: Path) -> None:
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "-q", "--bare", "-b", BRANCHES[0], str(bare))
    work = Path(tempfile.mkdtemp(prefix="gitsrv-"))
    try:
        _git("init", "-q", "-b", BRANCHES[0], str(work))
        for folder, (script, what) in FOLDERS.items():
            (work / folder).mkdir()
            shutil.copy(images.STANDINS / script, work / folder / script)
            shutil.copy(images.STANDINS / "common.py", work / folder / "common.py")
            (work / folder / "Dockerfile").write_text(dockerfile(script, what))
        (work / "README.md").write_text("comfyume (lab stand-in repository: the team's folders, stand-in services)\n")
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", "comfyume: the four services", cwd=work)
        _git("push", "-q", str(bare), f"HEAD:refs/heads/{BRANCHES[0]}", f"HEAD:refs/heads/{BRANCHES[1]}", cwd=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def commit(hosts: list[LabHost], branch: str, path: str, text: str, message: str) -> str:
    """Commit `text` into `path` on `branch` (as a push from a laptop would); return the new commit.
    Written straight into the bare repository with git's plumbing (no clone: root may not clone a
    repository another user owns)."""
    bare = str(repo_path(hosts))
    work = Path(tempfile.mkdtemp(prefix="gitsrv-"))
    try:
        (work / "blob").write_text(text)
        env_index = {"GIT_INDEX_FILE": str(work / "index")}
        git = lambda *a: _git("--git-dir", bare, *a, extra_env=env_index).stdout.strip()  # noqa: E731
        parent = git("rev-parse", f"refs/heads/{branch}")
        git("read-tree", parent)
        blob = git("hash-object", "-w", str(work / "blob"))
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = git("write-tree")
        sha = git("commit-tree", tree, "-p", parent, "-m", message)
        git("update-ref", f"refs/heads/{branch}", sha, parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    srv = server(hosts)
    sh(["chown", "-R", f"{srv.user}:{srv.user}", bare])
    return sha


def _deploy_key(host: LabHost, srv: LabHost) -> None:
    ssh_dir = host.home / ".ssh"
    key = ssh_dir / "id_ed25519"
    if not key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{KEY_MARK} {host.name}", "-f", str(key)])
    pub = Path(str(key) + ".pub").read_text().strip()
    auth = srv.home / ".ssh" / "authorized_keys"
    lines = auth.read_text().splitlines() if auth.exists() else []
    if not any(pub.split()[1] in line for line in lines):
        # git only: git-shell runs the upload-pack the client asked for, nothing else
        lines.append(f'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" {pub}')
        auth.write_text("\n".join(lines) + "\n")
    known = ssh_dir / "known_hosts"
    entry = f"{srv.address} {hostsvc.host_public_key(srv)}"
    if entry not in (known.read_text() if known.exists() else ""):
        with open(known, "a") as f:
            f.write(entry + "\n")
    for user_host in (host, srv):
        sh(["chown", "-R", f"{user_host.user}:{user_host.user}", str(user_host.home / ".ssh")])
    for p in (key, known):
        p.chmod(0o600)
    auth.chmod(0o600)


def revoke_deploy_key(host: LabHost, srv: LabHost) -> None:
    """The host can no longer read the repository (its key is removed from the server)."""
    pub = Path(str(host.home / ".ssh" / "id_ed25519") + ".pub")
    if not pub.exists():
        return
    blob = pub.read_text().split()[1]
    auth = srv.home / ".ssh" / "authorized_keys"
    auth.write_text("".join(line + "\n" for line in auth.read_text().splitlines() if blob not in line))


def ensure_base(hosts: list[LabHost]) -> None:
    """The lab's base image on every engine (imported from the cached root filesystem)."""
    tar = CACHE_ROOT / f"rootfs-bookworm-v{images.ROOTFS_VERSION}.tar"
    for host in hosts:
        if hostsvc.docker(host, "image", "inspect", images.BASE, check=False).returncode != 0:
            hostsvc.docker(host, "import", str(tar), images.BASE, timeout=300)


def hide_git(host: LabHost) -> None:
    """git is missing for this host's SSH sessions only (bind-mounted over in its sshd's namespace)."""
    mnt = hostsvc.sshd_mount_ns(host)
    sh(["nsenter", f"--mount={mnt}", "mount", "--bind", "/dev/null", "/usr/bin/git"])


def restore_git(host: LabHost) -> None:
    mnt = hostsvc.sshd_mount_ns(host)
    while sh(["nsenter", f"--mount={mnt}", "umount", "/usr/bin/git"], check=False).returncode == 0:
        pass
