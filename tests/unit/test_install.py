"""Installable (issue 11, item 6): a wheel built from the repository holds the compose files as
package data (the very files of compose/) and the `comfyume-fab` command, and the installed
command runs from a folder outside the checkout, reading its compose files from the installed
package. Built offline (no build isolation: setuptools and wheel from this venv); no host is
touched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

COMPOSE = sorted(p.name for p in (REPO / "compose").glob("*.yml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the repository's sources (the checkout itself stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("comfyume_fab", "compose", "docs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (built,) = out.glob("comfyume_fab-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed into its own folder (dependencies from this venv)."""
    target = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                          "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return target


def test_the_wheel_ships_the_compose_files_and_the_command(wheel):
    assert COMPOSE == ["app.yml", "worker-gpu.yml", "worker.yml"]
    with zipfile.ZipFile(wheel) as z:
        for name in COMPOSE:
            assert z.read(f"comfyume_fab/compose/{name}") == (REPO / "compose" / name).read_bytes(), name
        # the status schema ships too (issue 23): only that file of docs/
        assert z.read("comfyume_fab/docs/status.schema.json") == (REPO / "docs" / "status.schema.json").read_bytes()
        assert not [n for n in z.namelist() if n.startswith("comfyume_fab/docs/") and not n.endswith(".json")]
        entry = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "comfyume-fab = comfyume_fab.cli:main" in z.read(entry).decode()


def run_installed(installed: Path, cwd: Path, *args: str, env: dict | None = None):
    full = {k: v for k, v in os.environ.items() if k not in ("COMFYUME_HOSTS", "REDIS_PASSWORD", "ADMIN_PASSWORD")}
    full.update(env or {}, PYTHONPATH=str(installed))
    return subprocess.run([str(installed / "bin" / "comfyume-fab"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=full)


def test_the_installed_command_runs_plan_from_another_folder(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy2(REPO / "hosts.yaml", work / "hosts.yaml")
    secrets = {"REDIS_PASSWORD": "redis-pw-for-the-test", "ADMIN_PASSWORD": "admin-pw-for-the-test"}
    res = run_installed(installed, work, "plan", "--json", env=secrets)
    assert res.returncode == 0, res.stderr
    assert '"mode": "dual-server"' in res.stdout and "docker compose -p comfyume" in res.stdout
    assert "redis-pw-for-the-test" not in res.stdout + res.stderr
    # the command came from the installed copy, and read the compose files shipped in it
    where = subprocess.run([sys.executable, "-c", "import comfyume_fab.plan.compose as c; import comfyume_fab; "
                            "print(comfyume_fab.__file__); print(c.COMPOSE_DIR); print(len(c.static_file('app.yml')))"],
                           cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(installed)})
    pkg, compose_dir, size = where.stdout.split()
    assert Path(pkg).is_relative_to(installed) and Path(compose_dir) == installed / "comfyume_fab" / "compose"
    assert int(size) == len((REPO / "compose" / "app.yml").read_text())


def test_the_installed_command_lists_the_same_tasks_and_its_version(installed, tmp_path):
    res = run_installed(installed, tmp_path, "--list")
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.splitlines()[1:] if line.strip()}
    assert {"start-all", "stop-verda", "stop-all", "status", "plan", "lock-break", "lab.up", "lab.down"} <= listed
    from comfyume_fab import __version__
    version = run_installed(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"comfyume-fab {__version__}"
    for wrong in (["plan", "--nosuch"], ["nosuch-task"], ["plan", "-H"]):  # one sentence, exit 2 (Invoke: 1)
        res = run_installed(installed, tmp_path, *wrong)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1, res
        assert "`comfyume-fab --help TASK` their options" in res.stderr
    missing = run_installed(installed, tmp_path, "plan")  # no hosts.yaml here: one clear sentence, exit 2
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "hosts.yaml" in missing.stderr and "--hosts" in missing.stderr


def test_the_installed_command_prints_the_status_schema_it_ships(installed, tmp_path):
    """`-j` help names `status --schema`, which prints the installed package's copy, from any folder
    (issue 23, item 9: the help pointed to docs/status.schema.json, which an install does not have)."""
    res = run_installed(installed, tmp_path, "status", "--schema")
    assert res.returncode == 0, res.stderr
    assert res.stdout == (REPO / "docs" / "status.schema.json").read_text()
    assert "status --schema" in run_installed(installed, tmp_path, "--help", "status").stdout
    where = subprocess.run([sys.executable, "-c", "from comfyume_fab.statusschema import schema_path; "
                            "print(schema_path())"], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(installed)})
    assert Path(where.stdout.strip()) == installed / "comfyume_fab" / "docs" / "status.schema.json", where.stderr


def test_the_installed_status_names_its_version_not_rev_unknown(installed, tmp_path):
    """Outside a git checkout of this tool, status shows the installed package's version (issue 23,
    item 9: it showed `rev unknown`, read from the current folder)."""
    import yaml
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    for i, host in enumerate(data["hosts"].values()):  # closed local ports: the hosts are only reported down
        host["address"], host["port"] = "127.0.0.1", 9 + i
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_installed(installed, tmp_path, "status", env={"REDIS_PASSWORD": "r", "ADMIN_PASSWORD": "a"})
    assert res.returncode == 3, res.stderr
    from comfyume_fab import __version__
    head = res.stdout.splitlines()[0]
    assert head.endswith(f"rev {__version__} (installed package, not a git checkout)"), head
