"""Python virtual environments for the lab's images of the team's real services, made on this machine.

The lab's engines reach no registry, so the real Dockerfiles' `pip install` cannot run inside a
build. Instead each service's real requirements are installed HERE, with Debian's own
/usr/bin/python3.11 (the same interpreter the lab's Debian 12 base image has), into a venv that
the image then copies to /opt/venv. pip reaches the package index from this machine; PyTorch is
`torch==2.13.0`, the CPU build that lies on machines of this kind (pip's find-links).

Two things differ from a plain `pip install -r requirements.txt`, both for ComfyUI and both listed
in lab/real.py's shim table: PyPI's torchvision does not import beside that torch build, so a
labelled stand-in package named `torchvision` (this module writes it as a wheel) satisfies the
requirement; torchaudio is left out.

Each venv is cached under the lab cache, keyed by everything it is made from, and is only rebuilt
when one of those changes. Its scripts' `#!` lines are rewritten to /opt/venv, where it lives in
the image.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from .layout import CACHE_ROOT
from .system import LabError, sh

PYTHON = "/usr/bin/python3.11"  # Debian's; the lab base image has the same one
IN_IMAGE = "/opt/venv"
VENV_ROOT = CACHE_ROOT / "real"
RECIPE_VERSION = "1"
TORCH = "torch==2.13.0"
DROPPED = ("torch", "torchvision", "torchaudio")  # from ComfyUI's requirements: torch is pinned above
STANDIN_VERSION = "0.0.1+lab.standin"

TORCHVISION_INIT = '''"""STAND-IN torchvision for the comfyume lab (not the real package).

PyPI's torchvision does not import beside the CPU build of torch the lab uses. ComfyUI 0.8.0
imports torchvision at start-up only in a few model modules; this package lets those imports
succeed and fails with this message when anything from it is actually used.
"""


def __getattr__(name):
    raise ImportError(f"{__name__}.{name}: torchvision is a lab stand-in here (comfyume_fab/lab/venvs.py); "
                      "the model family that needs it cannot run in the lab")
'''


def _standin_files() -> dict[str, str]:
    return {"torchvision/__init__.py": TORCHVISION_INIT,
            "torchvision/transforms/__init__.py": TORCHVISION_INIT,
            "torchvision/transforms/functional.py": TORCHVISION_INIT}


def standin_wheel(folder: Path) -> Path:
    """Write the stand-in torchvision as a pure-Python wheel (so pip's resolver sees the requirement
    met, e.g. spandrel's) and return its path."""
    dist = f"torchvision-{STANDIN_VERSION}.dist-info"
    files = dict(_standin_files())
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: torchvision\nVersion: {STANDIN_VERSION}\n"
                                 "Summary: STAND-IN torchvision for the comfyume lab (imports only)\n")
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: comfyume-fab-lab\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"torchvision-{STANDIN_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), text)
    return path


def comfyui_requirements(text: str) -> list[str]:
    """ComfyUI's requirements without the lines for torch, torchvision and torchaudio."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower()
        if name not in DROPPED:
            out.append(line)
    return out


class Venv:
    """One venv recipe: requirement files (read as given) and extra requirement lines."""

    def __init__(self, name: str, requirement_files: Iterable[Path], extra: Iterable[str] = (),
                 comfyui: Path | None = None):
        self.name = name
        self.files = list(requirement_files)
        self.extra = list(extra)
        self.comfyui = comfyui  # ComfyUI's requirements.txt: filtered, torch pinned, stand-in torchvision

    def key(self) -> str:
        torch = f"{TORCH}|{TORCHVISION_INIT}|{DROPPED}|{STANDIN_VERSION}" if self.comfyui else ""
        h = hashlib.sha256(f"{RECIPE_VERSION}|{self.name}|{self.extra}|{torch}".encode())
        for path in self.files + ([self.comfyui] if self.comfyui else []):
            h.update(path.read_bytes())
        h.update(_python_version().encode())
        return h.hexdigest()[:12]

    def path(self) -> Path:
        return VENV_ROOT / f"venv-{self.name}-{self.key()}"

    def ensure(self, say: Callable[[str], None]) -> Path:
        """The built venv (made now unless the cache has it)."""
        final = self.path()
        if (final / ".complete").exists():
            return final
        VENV_ROOT.mkdir(parents=True, exist_ok=True)
        work = final.with_name(final.name + ".part")
        shutil.rmtree(work, ignore_errors=True)
        say(f"lab.real: installing the {self.name} requirements into a python3.11 venv on this machine")
        sh([PYTHON, "-m", "venv", str(work)], timeout=300)
        pip = [str(work / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir",
               "--disable-pip-version-check"]
        args: list[str] = []
        for path in self.files:
            args += ["-r", str(path)]
        if self.comfyui:
            wheel = standin_wheel(work / "standin")
            args += [TORCH, str(wheel), *comfyui_requirements(self.comfyui.read_text())]
        args += self.extra
        proc = sh([*pip, *args], check=False, timeout=1800)
        if proc.returncode != 0:
            raise LabError(f"installing the {self.name} requirements failed (pip exit {proc.returncode}): "
                           f"{(proc.stderr.strip() or proc.stdout.strip())[-600:]}")
        shutil.rmtree(work / "standin", ignore_errors=True)
        _relocate(work, IN_IMAGE)
        (work / ".complete").write_text(self.key() + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
        for old in VENV_ROOT.glob(f"venv-{self.name}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final


def _relocate(venv: Path, target: str) -> None:
    """Point the scripts' `#!` lines (and pyvenv.cfg's prompt-free paths) at `target`."""
    old = f"#!{venv}/bin/"
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(old.encode()):
            script.write_bytes(f"#!{target}/bin/".encode() + data[len(old):])
    for script in ("activate", "activate.csh", "activate.fish", "Activate.ps1"):
        path = venv / "bin" / script
        if path.exists():
            path.write_text(path.read_text().replace(str(venv), target))


_VERSION: list[str] = []


def _python_version() -> str:
    if not _VERSION:
        if not Path(PYTHON).exists():
            raise LabError(f"{PYTHON} is not installed; the lab's real-service images need Debian's python3.11 "
                           "(run `bash scripts/install-system.sh` as root)")
        _VERSION.append(sh([PYTHON, "-V"]).stdout.strip())
    return _VERSION[0]
