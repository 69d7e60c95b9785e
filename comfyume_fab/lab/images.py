"""Images for the lab's engines, built here because no container registry is reachable.

A Debian 12 root filesystem (debootstrap, minbase + python3, python3-redis, redis-server,
curl) becomes a local base image; the real redis-server 7 and the labelled stand-ins of the
comfyume services are built on it under the image names the compose files use. The result is
saved once as a tarball in the cache, keyed by a hash of the recipe and the stand-ins' source,
so a second `lab.up` only loads it into each engine.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .hostsvc import docker
from .layout import CACHE_ROOT, LabHost
from .system import LabError, sh

BASE = "comfyume-lab/base:bookworm"
ROOTFS_VERSION = "1"
ROOTFS_PACKAGES = "python3,python3-redis,redis-server,curl,procps"
STANDINS = Path(__file__).parent / "standins"
# Stand-ins that run on this machine, never in an image (the Verda API stand-in makes lab hosts):
# they are not copied into the images and do not change the images' recipe key.
MACHINE_SIDE = ("verda_api.py",)

STANDIN_NOTE = ("STAND-IN for the comfyume {svc} (lab only): speaks the real HTTP contract, "
                "is not the team's private image")
# name -> (CMD, label)
IMAGES: dict[str, tuple[list[str], str]] = {
    "redis:7-alpine": (["redis-server", "--protected-mode", "no"],
                       "real redis-server 7 from Debian 12, tagged with the name the compose file uses "
                       "(no registry reachable in the lab)"),
    "comfyume-queue-manager:v0.11.0": (["python3", "-u", "/opt/standins/queue_manager.py"],
                                       STANDIN_NOTE.format(svc="queue-manager")),
    "comfyume-admin:v0.11.0": (["python3", "-u", "/opt/standins/admin.py"], STANDIN_NOTE.format(svc="admin")),
    "comfyume-frontend:v0.11.0": (["python3", "-u", "/opt/standins/frontend.py"],
                                  STANDIN_NOTE.format(svc="frontend (ComfyUI UI)")),
    "comfyume-worker:v0.11.0": (["python3", "-u", "/opt/standins/worker.py"],
                                STANDIN_NOTE.format(svc="worker (ComfyUI inference API)")),
    "comfyume-lab/serverless-gateway:v1": (["python3", "-u", "/opt/standins/gateway.py"],
                                           "STAND-IN of Verda's serverless container gateway (lab only): "
                                           "Bearer key (404 without it), cold starts, async requests, the "
                                           "deployment API for replicas and scaling"),
}


def recipe_key() -> str:
    h = hashlib.sha256(f"{ROOTFS_VERSION}|{ROOTFS_PACKAGES}|{sorted(IMAGES.items())}".encode())
    for path in sorted(p for p in STANDINS.glob("*.py") if p.name not in MACHINE_SIDE):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def cached_tarball() -> Path:
    return CACHE_ROOT / f"images-{recipe_key()}.tar"


def debian_mirror() -> str:
    """The Debian archive URI the machine's own apt already uses (never hard-coded here)."""
    src = Path("/etc/apt/sources.list.d/debian.sources")
    if src.exists():
        for line in src.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        for line in lst.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"]:
                return next(p for p in parts[1:] if "://" in p)
    raise LabError("cannot find the Debian archive URI in /etc/apt/sources.list.d/debian.sources or "
                   "/etc/apt/sources.list (debootstrap needs it to build the lab's base image)")


def rootfs_tarball(say: Callable[[str], None]) -> Path:
    tar = CACHE_ROOT / f"rootfs-bookworm-v{ROOTFS_VERSION}.tar"
    if tar.exists():
        return tar
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    say("building the Debian 12 base filesystem with debootstrap (about a minute, once)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_ROOT))
    try:
        sh(["debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", "bookworm", str(work),
            debian_mirror()], timeout=900)
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives",
                     "var/lib/apt/lists"):
            shutil.rmtree(work / junk, ignore_errors=True)
        sh(["tar", "-C", str(work), "-cf", f"{tar}.part", "."], timeout=300)
        os.replace(f"{tar}.part", tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tar


def build_images(host: LabHost, say: Callable[[str], None]) -> Path:
    """Build every image on `host`'s engine and save them to the cache tarball."""
    key = recipe_key()
    rootfs = rootfs_tarball(say)
    say(f"importing the base image and building {len(IMAGES)} images on {host.name}")
    if docker(host, "image", "inspect", BASE, check=False).returncode != 0:
        docker(host, "import", str(rootfs), BASE, timeout=300)
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=CACHE_ROOT))
    try:
        shutil.copytree(STANDINS, ctx / "standins", ignore=shutil.ignore_patterns("__pycache__", *MACHINE_SIDE))
        for name, (cmd, label) in IMAGES.items():
            dockerfile = "\n".join([
                f"FROM {BASE}",
                "COPY standins /opt/standins",
                f"LABEL org.comfyume.lab={_json(label)}",
                f"CMD {_json_list(cmd)}", ""])
            (ctx / "Dockerfile").write_text(dockerfile)
            env_build = ["build", "-q", "-t", name, str(ctx)]
            proc = _legacy_build(host, env_build)
            if proc.returncode != 0:
                raise LabError(f"building lab image {name} failed: {proc.stderr.strip()[-400:]}")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    tar = CACHE_ROOT / f"images-{key}.tar"
    docker(host, "save", "-o", f"{tar}.part", *IMAGES, timeout=300)
    os.replace(f"{tar}.part", tar)
    for old in CACHE_ROOT.glob("images-*.tar"):
        if old != tar:
            old.unlink(missing_ok=True)
    return tar


def _legacy_build(host: LabHost, args: list[str]):
    # The classic builder needs no buildx plugin and no registry when FROM names a local image.
    env = dict(os.environ, DOCKER_HOST=host.docker_host, DOCKER_BUILDKIT="0")
    return sh(["docker", *args], check=False, timeout=300, env=env)


def _json(s: str) -> str:
    import json
    return json.dumps(s)


def _json_list(items: list[str]) -> str:
    import json
    return json.dumps(items)


def has_images(host: LabHost) -> bool:
    return docker(host, "image", "inspect", *IMAGES, check=False).returncode == 0


def ensure_images(hosts: list[LabHost], say: Callable[[str], None]) -> None:
    engines = [h for h in hosts if h.engine]
    missing = [h for h in engines if not has_images(h)]
    if not missing:
        return
    tar = cached_tarball()
    if not tar.exists():
        tar = build_images(missing[0], say)
        missing = missing[1:]
    if missing:
        say(f"loading the lab images into {', '.join(h.name for h in missing)}")
    with ThreadPoolExecutor(max_workers=max(1, len(missing))) as pool:
        list(pool.map(lambda h: docker(h, "load", "-q", "-i", str(tar), timeout=300), missing))
