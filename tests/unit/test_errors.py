"""Every expected failure carries its documented exit code (README's table), and the task wrapper
turns each into exactly that code with one line on stderr and no traceback."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from invoke.exceptions import Exit

import comfyume_fab
from comfyume_fab import errors, taskrun
from comfyume_fab.errors import ExitCode, FabError

README = Path(__file__).resolve().parents[2] / "README.md"
EXPECTED = {
    "FabError": ExitCode.FAILURE, "ConfigError": ExitCode.CONFIG, "DriftError": ExitCode.CONFIG,
    "UnreachableError": ExitCode.UNREACHABLE, "UnhealthyError": ExitCode.UNHEALTHY,
    "TunnelError": ExitCode.UNHEALTHY, "LockedError": ExitCode.LOCKED, "MissingImageError": ExitCode.MISSING_IMAGE,
}


def all_error_classes() -> list[type]:
    for info in pkgutil.walk_packages(comfyume_fab.__path__, "comfyume_fab."):
        if ".lab" not in info.name:
            importlib.import_module(info.name)
    found, todo = [], [FabError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def documented_codes() -> set[int]:
    table = README.read_text().split("### Exit codes", 1)[1].split("\n\n##", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}


def test_every_error_class_has_its_documented_code():
    classes = all_error_classes()
    assert {c.__name__ for c in classes} == set(EXPECTED), "a new error class needs a row in EXPECTED"
    for cls in classes:
        assert cls.code == EXPECTED[cls.__name__], cls
        assert int(cls.code) in documented_codes()


def make(cls: type) -> FabError:
    if cls is errors.ConfigError:
        return cls(["hosts.yaml:1 mode: wrong", "hosts.yaml:2 hosts: wrong"])
    if cls is errors.TunnelError:
        return cls("refused", "verda could not connect to 100.64.0.1:6379", host="verda")
    return cls("what went wrong", host="mello", step="compose up", hint="the fix")


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_the_task_wrapper_exits_with_the_class_code(cls, capsys):
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="start-all"):
            raise make(cls)
    assert info.value.code == int(cls.code)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if cls is errors.ConfigError:
        assert err.splitlines() == ["hosts.yaml:1 mode: wrong", "hosts.yaml:2 hosts: wrong"]
    elif cls.code == ExitCode.CONFIG:  # an inventory problem: its own line(s), as the file's are
        assert err.splitlines() == ["host mello, step compose up: what went wrong (the fix)"]
    else:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: start-all: ")


def test_interrupt_and_bug_codes(capsys):
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="status"):
            raise KeyboardInterrupt
    assert info.value.code == 130
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="status"):
            raise ZeroDivisionError("x")
    assert info.value.code == 1 and "rerun with --verbose" in capsys.readouterr().err


def test_an_error_raised_while_a_ctrl_c_is_handled_is_still_the_ctrl_c(capsys):
    """A library tripping over its own half-opened channel as the connections close after a
    Ctrl-C (paramiko: 'NoneType' object has no attribute '_unlink_channel') exits 130, not 1."""
    with pytest.raises(Exit) as info:
        with taskrun.reported(task="start-all"):
            try:
                raise KeyboardInterrupt
            finally:
                raise AttributeError("'NoneType' object has no attribute '_unlink_channel'")
    err = capsys.readouterr().err
    assert info.value.code == 130
    assert "start-all: interrupted (AttributeError while stopping: 'NoneType' object has no attribute " \
           "'_unlink_channel'); the deploy lock was not taken by this run; rerun to converge" in err
    with pytest.raises(Exit) as info:  # a bug with no Ctrl-C behind it stays a bug
        with taskrun.reported(task="start-all"):
            try:
                raise ValueError("inner")
            except ValueError:
                raise AttributeError("outer")
    assert info.value.code == 1
