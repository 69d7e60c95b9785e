"""tests/unit needs neither root nor the lab, and the lab is never torn down for another checkout
unasked (issue 11, item 9). Nothing here touches the machine's lab: the owner record is pointed
at tmp, and the refusal of a unit test that asks for the lab is shown in a separate pytest run
of a scratch copy of tests/conftest.py."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from comfyume_fab.lab import manager
from comfyume_fab.lab.system import LabError
from tests.support import REPO


@pytest.fixture
def owner_file(tmp_path, monkeypatch):
    monkeypatch.setattr(manager, "OWNER", tmp_path / "comfyume-lab.owner")
    monkeypatch.setattr(manager, "LAB_DIR", tmp_path / "here" / ".lab")
    monkeypatch.delenv(manager.TAKEOVER_ENV, raising=False)
    return manager.OWNER


def test_a_lab_made_by_another_checkout_is_refused_with_its_name(owner_file, monkeypatch):
    monkeypatch.setattr(manager, "_running", lambda: True)  # that checkout's lab is up
    owner_file.write_text("/work/other-checkout/.lab\n")
    assert manager.owner() == "/work/other-checkout/.lab" and not manager.made_here()
    with pytest.raises(LabError) as info:
        manager._check_owner(None, "remove the lab")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("refusing to remove the lab: the lab that is up was made by the checkout at "
                           "/work/other-checkout (its lab folder /work/other-checkout/.lab)")
    assert "`invoke lab.down` there" in text and "--takeover" in text and "COMFYUME_LAB_TAKEOVER=1" in text
    manager._check_owner(True, "remove the lab")  # an explicit takeover goes ahead
    monkeypatch.setenv(manager.TAKEOVER_ENV, "1")
    manager._check_owner(None, "remove the lab")  # and so does the environment's (CI, benchmarks)


def test_leftovers_of_a_lab_that_no_longer_runs_are_not_refused(owner_file, monkeypatch):
    """After a reboot, or once the sessions' processes were ended (as before CI), the owner record
    names a lab whose sshd processes are gone: any checkout may clean it up."""
    owner_file.write_text("/work/other-checkout/.lab\n")
    monkeypatch.setattr(manager, "RUN_ROOT", owner_file.parent / "run")
    (manager.RUN_ROOT / "mello").mkdir(parents=True)
    (manager.RUN_ROOT / "mello" / "sshd.pid").write_text("999999999\n")  # no such process
    manager._check_owner(None, "rebuild the lab")
    monkeypatch.setattr(manager, "_running", lambda: True)
    with pytest.raises(LabError):
        manager._check_owner(None, "rebuild the lab")


def test_this_checkouts_own_lab_or_none_is_never_refused(owner_file):
    manager._check_owner(None, "rebuild the lab")  # no lab recorded
    owner_file.write_text(str(manager.LAB_DIR.resolve()) + "\n")
    assert manager.made_here()
    manager._check_owner(None, "rebuild the lab")


def test_a_unit_test_that_asks_for_the_lab_fails_before_the_lab_is_touched(tmp_path):
    tests = tmp_path / "tests"
    (tests / "unit").mkdir(parents=True)
    for name in ("conftest.py", "support.py"):  # the fixtures and what they share
        shutil.copy2(REPO / "tests" / name, tests / name)
    (tests / "__init__.py").write_text("")
    (tests / "unit" / "__init__.py").write_text("")
    (tests / "unit" / "test_sneaky.py").write_text(
        "def test_direct(lab):\n    raise AssertionError('the lab fixture ran')\n\n"
        "def test_through_inv(inv):\n    raise AssertionError('the inv fixture ran')\n\n"
        "def test_plain():\n    assert True\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "1 passed, 2 errors" in out, out
    assert ("tests/unit/test_sneaky.py::test_direct: a unit test must not use the lab (it asks for the `lab` "
            "fixture); move it to tests/lab/ or drop the fixture") in out
    assert "test_through_inv: a unit test must not use the lab (it asks for the `lab` fixture through inv)" in out
    assert "fixture ran" not in out and "need root" not in out


def test_lab_up_checks_its_options_before_anything_is_torn_down(monkeypatch, capsys):
    from invoke.exceptions import Exit

    from comfyume_fab.lab import cli

    def must_not_run(**kw):
        raise AssertionError("manager.up ran")
    monkeypatch.setattr(manager, "up", must_not_run)
    for args, said in (((0, 0, 3), "--workers 0 is out of range (give 1 to 16)"),
                       ((1, -1, 3), "--sshd-only -1 is out of range (give 0 to 64)"),
                       ((1, 0, 500), "--users 500 is out of range (give 1 to 200)")):
        with pytest.raises(Exit) as info:
            cli.up(*args)
        assert info.value.code == 2
        assert capsys.readouterr().err == f"error: lab.up: {said}\n"


def test_no_two_test_modules_share_a_name():
    """tests/unit and tests/lab are not packages: pytest imports both by basename in one run, and a
    second module of the same name stops the whole collection."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
