"""`invoke exec HOST SERVICE -- COMMAND...`: run a command in a service's container on its host
(`docker compose exec`), output streamed, the command's exit code passed through; `-i` gives an
interactive shell on a pseudo-terminal.

The command is argv: each argument is quoted once (shlex) for the host's login shell, which
hands it to `docker compose exec` unchanged; nothing re-parses it.
"""
from __future__ import annotations

import sys
from typing import Sequence

from ..errors import ConfigError, ExitCode
from ..host.commands import ComposeProject, in_workdir
from ..host.session import Session
from ..inventory.model import Inventory
from ..plan.planner import make_plan

DEFAULT_SHELL = ("sh",)


def exec_command(compose: ComposeProject, service: str, argv: Sequence[str], interactive: bool = False) -> str:
    """The remote command line: `docker compose exec [-T] SERVICE ARGV...`, every argument quoted once."""
    flags = () if interactive else ("-T",)
    return in_workdir(compose.workdir, compose.argv("exec", *flags, service, *argv))


def run_exec(inv: Inventory, host: str, service: str, argv: Sequence[str], interactive: bool = False) -> int:
    """Run `argv` in `service`'s container on `host`; return its exit code."""
    inv.host(host)  # ConfigError: unknown host, with the closest name
    plan = make_plan(inv)
    hp = next((h for h in plan.hosts if h.name == host), None)
    if hp is None:
        raise ConfigError(f"exec: host '{host}' runs no service in mode {inv.mode} (hosts that do: "
                          f"{', '.join(h.name for h in plan.hosts)})")
    if service not in hp.services:
        users = [s for s in hp.services if s.startswith("user")]
        shown = [s for s in hp.services if not s.startswith("user")] + ([f"{users[0]}..{users[-1]}"] if users else [])
        raise ConfigError(f"exec: unknown service '{service}' on {host} (services there: {', '.join(shown)})")
    argv = list(argv) or (list(DEFAULT_SHELL) if interactive else [])
    if not argv:
        raise ConfigError("exec: no command given (put it after `--`, e.g. `invoke exec mello redis -- "
                          "redis-cli ping`, or use -i for a shell)")
    with Session(inv, [hp.host]) as s:
        s.connect()
        s.require_all()
        remote = s[host]
        cmd = exec_command(hp.compose, service, argv, interactive)
        if interactive:
            return remote.interactive(cmd)
        out, err = sys.stdout.buffer, sys.stderr.buffer

        def write(stream):
            def w(data: bytes) -> None:
                stream.write(data)
                stream.flush()
            return w
        try:
            rc = remote.stream(cmd, write(out), on_err=write(err), step="exec")
        except KeyboardInterrupt:  # the connection closes with the session: sshd ends the channel
            return int(ExitCode.INTERRUPTED)
        return 1 if rc is None else rc
