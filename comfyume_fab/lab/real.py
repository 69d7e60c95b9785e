"""The lab's "real" profile: images of the team's own services, built from ../shared/ at lab time.

Built from `../shared/comfyume-real/` (the team's queue manager, admin page and frontend entrypoint
from `mello-track`, their worker from `verda-track`) and `../shared/comfyui-0.8.0/` (ComfyUI 0.8.0),
never copied into this project: each image is `FROM` the lab's own Debian 12 base image
(lab/images.py), with the service's real requirements installed on this machine into a python3.11
venv (lab/venvs.py) copied to /opt/venv, the real code copied in unchanged, and the real `CMD` /
`ENTRYPOINT` / `USER` / `WORKDIR` read from the service's own Dockerfile and run unchanged with
/opt/venv/bin first on PATH. Redis stays the lab's real redis-server 7.

Everything that differs from the team's Dockerfiles (SHIMS, also in the README's lab section):

| where | what | why |
|---|---|---|
| every image | `FROM comfyume-lab/base:bookworm` (Debian 12, python3.11) instead of `python:3.11-slim` / `nvidia/cuda:12.4.0-runtime-ubuntu22.04` | the lab's engines reach no registry |
| every image | requirements installed on this machine into /opt/venv, venv first on PATH, instead of `pip install` / `apt-get` / `git clone` in the build | likewise |
| frontend, worker | ComfyUI 0.8.0 from ../shared/comfyui-0.8.0 instead of a `git clone` of v0.11.0, with the folders upstream ships but the snapshot lacks (`custom_nodes`, `models`, `input`, `output`) made, `custom_nodes` holding one labelled placeholder .txt | the source tree the lab has; the real frontend entrypoint's `cp -r /tmp/custom_nodes_backup/*` fails on an empty folder (crash loop) |
| frontend, worker | `torch==2.13.0` (CPU build), a labelled stand-in `torchvision` (imports only), no `torchaudio`; one venv for both with ComfyUI's and the worker's requirements | PyPI's torchvision does not import beside that torch; three audio node modules then fail to import, harmlessly |
| worker | `/opt/lab-shim/python3`, first on PATH: runs /opt/venv/bin/python3, adding `--cpu` to `python3 main.py ...` when `nvidia-smi` does not work | the real `start-worker.sh` never passes `--cpu` and ComfyUI exits without CUDA; the script stays byte-identical |

Images are tagged `comfyume-lab-real/<service>:<commit>` (IMAGES below), saved once as one
tarball in the lab cache keyed by every input (real sources, ComfyUI tree, venvs, recipe), and a
later run only loads it into an engine that lacks them (`ensure`). `inventory_dict` is the lab
inventory with `images:` naming them; `invoke lab.real` builds/loads and writes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import images as standin_images
from . import venvs
from .hostsvc import docker
from .layout import CACHE_ROOT, LabHost
from .system import LabError, sh

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("COMFYUME_SHARED", REPO.parent / "shared"))
RECIPE_VERSION = "3"
PREFIX = "comfyume-lab-real"
MELLO_COMMIT = "94aca35"
VERDA_COMMIT = "483b5e8"
# inventory images: key -> (image name, folder in comfyume-real, its Dockerfile)
SERVICES = {
    "queue_manager": (f"{PREFIX}/queue-manager:{MELLO_COMMIT}", "mello-track/queue-manager"),
    "admin": (f"{PREFIX}/admin:{MELLO_COMMIT}", "mello-track/admin"),
    "frontend": (f"{PREFIX}/frontend:{MELLO_COMMIT}", "mello-track/comfyui-frontend"),
    "worker": (f"{PREFIX}/worker:{VERDA_COMMIT}", "verda-track/comfyui-worker"),
}
IMAGES = {key: name for key, (name, _) in SERVICES.items()}
COMFYUI_BASE = f"{PREFIX}/comfyui-venv:local"  # frontend and worker share this layer (not saved by name)
LABEL = ("REAL comfyume {svc} from ../shared/comfyume-real ({commit}), built for the lab by "
         "comfyume_fab/lab/real.py: lab base image, venv from this machine, shims listed there")

CPU_SHIM = """#!/bin/sh
# LAB SHIM (comfyume_fab/lab/real.py), not part of the team's image: the real start-worker.sh runs
# `python3 main.py --listen 0.0.0.0 --port 8188 &` and never passes --cpu; without CUDA ComfyUI exits.
# This python3, first on PATH, adds --cpu to that one command when nvidia-smi does not work.
if [ "$1" = main.py ] && ! nvidia-smi >/dev/null 2>&1; then
    exec /opt/venv/bin/python3 "$@" --cpu
fi
exec /opt/venv/bin/python3 "$@"
"""
PATH_ENV = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sources() -> dict[str, Path]:
    """The real trees, checked to be there (one sentence when not)."""
    real, comfy = SHARED / "comfyume-real", SHARED / "comfyui-0.8.0"
    for path in (real / "mello-track" / "queue-manager" / "main.py", real / "verda-track" / "comfyui-worker" / "worker.py",
                 comfy / "main.py"):
        if not path.is_file():
            raise LabError(f"{path} is missing: the real profile builds from ../shared/comfyume-real and "
                           f"../shared/comfyui-0.8.0 beside this checkout (or set COMFYUME_SHARED to their folder)")
    return {"real": real, "comfyui": comfy}


def _venvs(src: dict[str, Path]) -> dict[str, venvs.Venv]:
    real = src["real"]
    return {
        "queue_manager": venvs.Venv("queue-manager", [real / "mello-track/queue-manager/requirements.txt"]),
        "admin": venvs.Venv("admin", [real / "mello-track/admin/requirements.txt"]),
        "comfyui": venvs.Venv("comfyui", [real / "verda-track/comfyui-worker/requirements.txt"],
                              comfyui=src["comfyui"] / "requirements.txt"),
    }


def dockerfile_instructions(path: Path) -> dict[str, str]:
    """The real Dockerfile's CMD, ENTRYPOINT, USER and WORKDIR (last of each), as written."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(CMD|ENTRYPOINT|USER|WORKDIR|EXPOSE)\s+(.+?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _tree_hash(h, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())


def recipe_key(src: dict[str, Path] | None = None) -> str:
    src = src or sources()
    h = hashlib.sha256(f"{RECIPE_VERSION}|{sorted(SERVICES.items())}|{CPU_SHIM}|{LABEL}|"
                       f"{standin_images.ROOTFS_VERSION}|{standin_images.ROOTFS_PACKAGES}".encode())
    for _, folder in SERVICES.values():
        _tree_hash(h, src["real"] / folder)
    _tree_hash(h, src["comfyui"])
    for venv in _venvs(src).values():
        h.update(venv.key().encode())
    return h.hexdigest()[:12]


def cached_tarball(key: str | None = None) -> Path:
    return CACHE_ROOT / f"real-images-{key or recipe_key()}.tar"


# --- Dockerfiles: the real instructions, FROM the lab base -----------------------------------

KEY_LABEL = "org.comfyume.lab.real-key"


def _label(svc: str, commit: str, key: str) -> str:
    return f"LABEL org.comfyume.lab={json.dumps(LABEL.format(svc=svc, commit=commit))} {KEY_LABEL}={key}"


def _app_dockerfile(svc: str, real: dict[str, str], copy: list[str], useradd: str | None, key: str) -> str:
    lines = [f"FROM {standin_images.BASE}", "COPY venv /opt/venv", f"ENV PATH={PATH_ENV}",
             f"WORKDIR {real.get('WORKDIR', '/app')}", *copy]
    if useradd:
        lines.append(f"RUN {useradd}")
    if "USER" in real:
        lines.append(f"USER {real['USER']}")
    if "EXPOSE" in real:
        lines.append(f"EXPOSE {real['EXPOSE']}")
    lines += [_label(svc, MELLO_COMMIT, key)]
    if "ENTRYPOINT" in real:
        lines.append(f"ENTRYPOINT {real['ENTRYPOINT']}")
    lines.append(f"CMD {real['CMD']}")
    return "\n".join(lines) + "\n"


def _build(host: LabHost, tag: str, ctx: Path, dockerfile: str) -> None:
    (ctx / "Dockerfile").write_text(dockerfile)
    env = dict(os.environ, DOCKER_HOST=host.docker_host, DOCKER_BUILDKIT="0")
    proc = sh(["docker", "build", "-q", "-t", tag, str(ctx)], check=False, timeout=900, env=env)
    if proc.returncode != 0:
        raise LabError(f"building lab image {tag} on {host.name} failed: {proc.stderr.strip()[-600:]}")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard links when on one filesystem (a 2 GB venv in a second), else a copy."""
    if sh(["cp", "-al", str(src), str(dst)], check=False, timeout=600).returncode != 0:
        shutil.copytree(src, dst, symlinks=True)


def build(host: LabHost, say: Callable[[str], None]) -> Path:
    """Build every real-profile image on `host`'s engine and save them to the cache tarball."""
    src = sources()
    key = recipe_key(src)
    envs = {name: v.ensure(say) for name, v in _venvs(src).items()}
    real = src["real"]
    rootfs = standin_images.rootfs_tarball(say)
    if docker(host, "image", "inspect", standin_images.BASE, check=False).returncode != 0:
        docker(host, "import", str(rootfs), standin_images.BASE, timeout=300)
    say(f"lab.real: building the real-service images on {host.name}")
    work = Path(tempfile.mkdtemp(prefix="real-ctx-", dir=CACHE_ROOT))
    try:
        # queue manager: `COPY . .` into /app, a user of its own, uvicorn as its CMD
        qm_dir = real / "mello-track/queue-manager"
        ctx = work / "qm"
        ctx.mkdir()
        _link_tree(envs["queue_manager"], ctx / "venv")
        shutil.copytree(qm_dir, ctx / "app")
        _build(host, IMAGES["queue_manager"], ctx, _app_dockerfile(
            "queue-manager", dockerfile_instructions(qm_dir / "Dockerfile"), ["COPY app/ ."],
            "useradd -m -u 1000 queuemanager && chown -R queuemanager:queuemanager /app", key))
        # admin: only app.py, runs as root
        admin_dir = real / "mello-track/admin"
        ctx = work / "admin"
        ctx.mkdir()
        _link_tree(envs["admin"], ctx / "venv")
        shutil.copy2(admin_dir / "app.py", ctx / "app.py")
        _build(host, IMAGES["admin"], ctx, _app_dockerfile(
            "admin", dockerfile_instructions(admin_dir / "Dockerfile"), ["COPY app.py ."], None, key))
        # the shared ComfyUI venv layer
        ctx = work / "comfyui-venv"
        ctx.mkdir()
        _link_tree(envs["comfyui"], ctx / "venv")
        _build(host, COMFYUI_BASE, ctx, "\n".join([
            f"FROM {standin_images.BASE}", "COPY venv /opt/venv", f"ENV PATH={PATH_ENV}", ""]))
        _build_frontend(host, real, src["comfyui"], work / "frontend", key)
        _build_worker(host, real, src["comfyui"], work / "worker", key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tar = cached_tarball(key)
    say("lab.real: saving the images to the lab cache")
    docker(host, "save", "-o", f"{tar}.part", *IMAGES.values(), timeout=900)
    os.replace(f"{tar}.part", tar)
    for old in CACHE_ROOT.glob("real-images-*.tar"):
        if old != tar:
            old.unlink(missing_ok=True)
    return tar


UPSTREAM_DIRS = ("custom_nodes", "models", "input", "output")  # in ComfyUI's repository, not in the snapshot


def _comfyui_copy(comfyui: Path, dst: Path) -> None:
    shutil.copytree(comfyui, dst, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    for name in UPSTREAM_DIRS:
        (dst / name).mkdir(exist_ok=True)
    # Upstream's custom_nodes holds two example files; the real frontend entrypoint restores its
    # backup with `cp -r /tmp/custom_nodes_backup/* ...`, which fails on an empty folder.
    placeholder = dst / "custom_nodes" / "LAB-PLACEHOLDER.txt"
    if not any((dst / "custom_nodes").iterdir()):
        placeholder.write_text("Lab placeholder (comfyume_fab/lab/real.py): upstream ComfyUI ships example files "
                               "here that the snapshot in ../shared lacks; ComfyUI loads no .txt file.\n")


def _build_frontend(host: LabHost, real: Path, comfyui: Path, ctx: Path, key: str) -> None:
    fe_dir = real / "mello-track/comfyui-frontend"
    ins = dockerfile_instructions(fe_dir / "Dockerfile")
    ctx.mkdir()
    _comfyui_copy(comfyui, ctx / "comfyui")
    shutil.copy2(fe_dir / "docker-entrypoint.sh", ctx / "docker-entrypoint.sh")
    # The real Dockerfile, step by step, with /comfyui from the ComfyUI tree instead of a git clone.
    _build(host, IMAGES["frontend"], ctx, "\n".join([
        f"FROM {COMFYUI_BASE}",
        "COPY comfyui /comfyui",
        "WORKDIR /comfyui",
        "RUN cp -r /comfyui/custom_nodes /tmp/custom_nodes_backup && mkdir -p /build/custom_nodes",
        "COPY docker-entrypoint.sh /usr/local/bin/",
        "RUN chmod +x /usr/local/bin/docker-entrypoint.sh",
        f"EXPOSE {ins.get('EXPOSE', '8188')}",
        _label("frontend", MELLO_COMMIT, key),
        f"ENTRYPOINT {ins['ENTRYPOINT']}",
        f"CMD {ins['CMD']}", ""]))


def _build_worker(host: LabHost, real: Path, comfyui: Path, ctx: Path, key: str) -> None:
    wk_dir = real / "verda-track/comfyui-worker"
    ins = dockerfile_instructions(wk_dir / "Dockerfile")
    ctx.mkdir()
    _comfyui_copy(comfyui, ctx / "ComfyUI")
    for name in ("worker.py", "vram_monitor.py", "start-worker.sh"):
        shutil.copy2(wk_dir / name, ctx / name)
    (ctx / "python3").write_text(CPU_SHIM)
    _build(host, IMAGES["worker"], ctx, "\n".join([
        f"FROM {COMFYUI_BASE}",
        "ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1",
        "WORKDIR /workspace",
        "COPY ComfyUI /workspace/ComfyUI",
        "WORKDIR /workspace/ComfyUI",
        "COPY worker.py vram_monitor.py start-worker.sh /workspace/",
        "RUN chmod +x /workspace/start-worker.sh /workspace/worker.py /workspace/vram_monitor.py",
        "RUN mkdir -p /workspace/ComfyUI/models /workspace/ComfyUI/output /workspace/ComfyUI/input /outputs /inputs",
        "RUN useradd -m -u 1000 comfyuser && chown -R comfyuser:comfyuser /workspace /outputs /inputs",
        "COPY python3 /opt/lab-shim/python3",
        "RUN chmod 755 /opt/lab-shim/python3",
        f"ENV PATH=/opt/lab-shim:{PATH_ENV}",
        f"USER {ins.get('USER', 'comfyuser')}",
        f"EXPOSE {ins.get('EXPOSE', '8188')}",
        _label("worker", VERDA_COMMIT, key),
        f"CMD {ins['CMD']}", ""]))


# --- loading into the engines -------------------------------------------------------------------

def has_images(host: LabHost, key: str) -> bool:
    """Does the engine have every real-profile image, built from the current inputs (`key`)?"""
    proc = docker(host, "image", "inspect", "--format", "{{index .Config.Labels \"%s\"}}" % KEY_LABEL,
                  *IMAGES.values(), check=False)
    return proc.returncode == 0 and set(proc.stdout.split()) == {key}


def ensure(hosts: list[LabHost], say: Callable[[str], None] = print) -> dict[str, float]:
    """Every engine among `hosts` has the real images: loaded from the cached tarball (built first,
    on the first engine that lacks them, when there is none). Returns seconds per phase."""
    times: dict[str, float] = {}
    engines = [h for h in hosts if h.engine]
    key = recipe_key()
    missing = [h for h in engines if not has_images(h, key)]
    if not missing:
        return times
    tar = cached_tarball(key)
    if not tar.exists():
        t0 = time.monotonic()
        tar = build(missing[0], say)
        times["build"] = time.monotonic() - t0
        missing = [h for h in missing if not has_images(h, key)]
    if missing:
        t0 = time.monotonic()
        say(f"lab.real: loading the real-service images into {', '.join(h.name for h in missing)}")
        for h in missing:  # one at a time: each load writes ~2 GB
            docker(h, "load", "-q", "-i", str(tar), timeout=900)
        times["load"] = time.monotonic() - t0
    return times


def overlay(host: LabHost, base: str, tag: str, files: dict[str, Path]) -> str:
    """Build `tag` FROM `base` with `files` (path in the image -> file here) copied over: for tests
    that mend a real service in a temporary copy. Returns the tag."""
    ctx = Path(tempfile.mkdtemp(prefix="real-overlay-", dir=CACHE_ROOT))
    try:
        lines = [f"FROM {base}"]
        for n, (target, source) in enumerate(sorted(files.items())):
            shutil.copy2(source, ctx / f"f{n}")
            lines.append(f"COPY f{n} {target}")
        lines.append(f"LABEL org.comfyume.lab.overlay={json.dumps(', '.join(sorted(files)))}")
        _build(host, tag, ctx, "\n".join(lines) + "\n")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag


# --- the inventory ----------------------------------------------------------------------------

def inventory_dict(hosts: list[LabHost], key: Path, known_hosts: Path, secrets_file: str,
                   num_users: int = 1, images: dict[str, str] | None = None) -> dict:
    """The lab inventory (lab/files.py) with `images:` naming the real-profile images (present)."""
    from .files import inventory_dict as lab_inventory
    data = lab_inventory(hosts, key, known_hosts, num_users, secrets_file=secrets_file)
    data["images"] = {**IMAGES, **(images or {}), "source": "present"}
    data["timeouts"]["health"] = 240  # real ComfyUI on two shared cores
    data["timeouts"]["probe"] = 120
    return data


def write_inventory(lab_dir: Path, hosts: list[LabHost]) -> Path:
    import yaml
    path = lab_dir / "hosts-real.yaml"
    data = inventory_dict([h for h in hosts if h.engine and h.name in ("mello", "verda")],
                          lab_dir / "id_ed25519", lab_dir / "known_hosts", str(lab_dir / "secrets.env"))
    path.write_text("# Inventory of the built-in lab on the team's REAL services (`invoke lab.real`; "
                    "images from ../shared, see comfyume_fab/lab/real.py).\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path
