"""How every task runs: the inventory option resolved and loaded, and `reported()`, the one
place that prints errors and picks exit codes."""
from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

from invoke.exceptions import Exit

from .errors import ExitCode, FabError, clean

DEFAULT_INVENTORY = "hosts.yaml"


def inventory_path(option: str | None) -> str:
    """--hosts beats $COMFYUME_HOSTS beats ./hosts.yaml."""
    return option or os.environ.get("COMFYUME_HOSTS") or DEFAULT_INVENTORY


def load(option: str | None, need_secrets: bool = True, host_option: bool = False):
    """The validated inventory named by --hosts (or $COMFYUME_HOSTS, or ./hosts.yaml). Without
    `need_secrets` (plan, --dry-run, lock-break) a secret that is not set is shown as `unset`.
    `host_option`: the task also has `--host` (a value of --hosts that names a host says so)."""
    from .inventory.read import load_inventory
    if option and not os.path.lexists(option):
        _refuse_host_name(option, host_option)
    inv = load_inventory(inventory_path(option), need_secrets=need_secrets)
    if inv.provider_hosts:  # a rented host's addresses: from its record (.comfyume-fab/instances/)
        from .cloud import record
        inv = record.resolve(inv)
    return inv


def _default_host_names() -> list[str]:
    """The host names in the default inventory ($COMFYUME_HOSTS or ./hosts.yaml), if it reads as
    YAML; [] otherwise (it is only looked at to explain a wrong --hosts)."""
    import yaml
    path = os.environ.get("COMFYUME_HOSTS") or DEFAULT_INVENTORY
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
            return []
        with open(path, encoding="utf-8") as f:
            hosts = (yaml.safe_load(f) or {}).get("hosts")
        return [str(name) for name in hosts] if isinstance(hosts, dict) else []
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return []


def _refuse_host_name(option: str, host_option: bool) -> None:
    """`--hosts verda` where verda is no file but a host of the default inventory: say so."""
    if option not in _default_host_names():
        return
    from .errors import ConfigError
    from .invocation import program
    if host_option:
        raise ConfigError(f"--hosts {option}: {option} is a host name, not an inventory file: did you mean "
                          f"`--host {option}`? (-H/--hosts names the inventory file)")
    raise ConfigError(f"--hosts {option}: {option} is a host name, not an inventory file (-H/--hosts names the "
                      f"inventory file; `{program()} --help TASK` lists the task's options)")


def int_option(name: str, value) -> int:
    """An integer option, or a ConfigError sentence naming it (exit 2)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        from .errors import ConfigError
        raise ConfigError(f"{name} must be a whole number (got '{value}')") from None


def float_option(name: str, value) -> float:
    """A number option, or a ConfigError sentence naming it (exit 2)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        from .errors import ConfigError
        raise ConfigError(f"{name} must be a number of seconds (got '{value}')") from None


def remainder_argv() -> list[str]:
    """The words after the first `--` on the command line, exactly as the shell split them
    (Invoke's own `remainder` joins them with spaces, which would lose the boundaries)."""
    argv = sys.argv
    return list(argv[argv.index("--") + 1:]) if "--" in argv else []


@contextmanager
def reported(verbose: bool = False, task: str = ""):
    """FabError -> one sentence on stderr + its exit code; Ctrl-C -> 130; a bug -> exit 1 with a hint."""
    lock_mod = sys.modules.get("comfyume_fab.ops.lock")
    if lock_mod is not None:  # this task's lock, not an earlier one's (tests run many in one process)
        lock_mod._LAST = None
    if verbose:
        from .host.ssh import remote

        def trace(host: str, command: str, seconds: float, code: int) -> None:
            print(f"  [{host}] {seconds * 1000:7.1f} ms exit {code}: {command[:160]}", file=sys.stderr)
        remote.TRACE = trace
    try:
        yield
    except FabError as exc:
        if verbose:
            traceback.print_exc()
        label = f"{task}: " if task and not isinstance(exc.code, type(None)) else ""
        if exc.code == ExitCode.CONFIG:  # one line per problem in the inventory
            for line in exc.sentence().splitlines():
                print(line, file=sys.stderr)
        else:  # one line, even when a cause quotes multi-line output from a host
            text = " | ".join(part.strip() for part in exc.sentence().splitlines() if part.strip())
            print(f"error: {label}{text}", file=sys.stderr)
        raise Exit(code=int(exc.code))
    except KeyboardInterrupt as exc:
        _say_interrupted(task, exc)
        raise Exit(code=int(ExitCode.INTERRUPTED))
    except Exit:
        raise
    except BrokenPipeError:  # `invoke plan --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise Exit(code=int(ExitCode.OK))
    except Exception as exc:  # a bug: keep it to one line unless asked
        if verbose:
            traceback.print_exc()
        ctrl_c = _interrupt_behind(exc)
        if ctrl_c is not None:
            # raised while a Ctrl-C was being handled (a library tripping over a half-opened
            # channel as the connections closed): the user's Ctrl-C is what happened
            _say_interrupted(task, ctrl_c, f"{type(exc).__name__} while stopping: {clean(exc)}")
            raise Exit(code=int(ExitCode.INTERRUPTED))
        print(f"error: {task}: unexpected {type(exc).__name__}: {clean(exc)} (rerun with --verbose for the traceback)",
              file=sys.stderr)
        raise Exit(code=int(ExitCode.FAILURE))


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C this exception was raised while handling, if any (its context chain)."""
    seen = set()
    cur = exc.__context__
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return cur
        seen.add(id(cur))
        cur = cur.__context__
    return None


LOCKING_TASKS = ("start-all", "stop-verda", "stop-all", "rollback")  # the tasks that take the deploy lock


def _say_interrupted(task: str, exc: KeyboardInterrupt, also: str = "") -> None:
    """`TASK: interrupted; <what became of the deploy lock>; rerun to converge` (the lock part only
    for the tasks that take it, and definitive: never taken, or held and released)."""
    left = getattr(exc, "cfab_lock_left", None)  # set by DeployLock when its release failed
    extra = f" ({also})" if also else ""
    if left:
        lock = f"; WARNING: {left}"
    elif task in LOCKING_TASKS:
        lock_mod = sys.modules.get("comfyume_fab.ops.lock")
        lock = "; " + (lock_mod.interrupted_note() if lock_mod else "the deploy lock was not taken by this run")
    else:
        lock = ""
    rerun = "; rerun to converge" if task in LOCKING_TASKS else ""
    print(f"\n{task}: interrupted{extra}{lock}{rerun}", file=sys.stderr)
