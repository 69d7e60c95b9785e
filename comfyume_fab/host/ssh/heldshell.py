"""One shell held open on a host's connection (`open_shell`), so the watch screen's repeated reads
cost one round trip each and no new session, process start-up or login on the host."""
from __future__ import annotations

import secrets as _random
import select
import socket
import time

import paramiko

from ...errors import UnreachableError
from . import remote as remote_module  # TRACE is read at call time (set by --verbose)
from .remote import CHUNK, Remote, Result, broke, overran


class HeldShell:
    """One shell kept open on a host's connection (`open_shell`): `run` sends a command line
    to it and reads until a marker with the exit status, so a repeated read (status --watch) costs
    one round trip and no new session, process start-up or login on the host. It quacks like
    `Remote.run` (same `Result`, same errors) for readers such as `host.state.read`."""

    def __init__(self, remote: Remote, chan: paramiko.Channel):
        self.remote = remote
        self.name = remote.name
        self.chan = chan
        self.mark = f"@@cfab-done-{_random.token_hex(6)}"
        self._buf = b""

    def run(self, command: str, *, timeout: float | None = None, step: str = "run") -> Result:
        if timeout is None:
            timeout = self.remote.target.command_timeout
        t0 = time.monotonic()
        deadline = t0 + timeout
        needle = f"\n{self.mark} ".encode()
        try:
            self.chan.sendall(f"cd; {{ {command}\n}} </dev/null 2>&1; printf '\\n{self.mark} %s\\n' \"$?\"\n".encode())
            while True:
                at = self._buf.find(needle)
                if at >= 0:
                    end = self._buf.find(b"\n", at + len(needle))
                    if end >= 0:
                        out = self._buf[:at]
                        code = int(self._buf[at + len(needle):end])
                        self._buf = self._buf[end + 1:]
                        break
                if self.chan.closed or self.chan.eof_received and not self.chan.recv_ready():
                    raise EOFError("the shell on the host ended")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                if self.chan.recv_ready():
                    self._buf += self.chan.recv(CHUNK)
                else:
                    select.select([self.chan], [], [], min(left, 0.5))
        except socket.timeout:
            raise overran(self.name, command, timeout, step) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise broke(self.name, command, exc, step) from None
        dt = time.monotonic() - t0
        if remote_module.TRACE is not None:
            remote_module.TRACE(self.name, command, dt, code)
        return Result(command, out.decode(errors="replace"), "", code, dt)

    def close(self) -> None:
        try:
            self.chan.close()
        except Exception:
            pass


def open_shell(remote: Remote) -> HeldShell:
    """A shell held open on `remote`'s connection (bash without profile files, else sh)."""
    try:
        chan = remote.transport.open_session(timeout=remote.target.connect_timeout)
        chan.exec_command("command -v bash >/dev/null 2>&1 && exec bash --noprofile --norc; exec sh")
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise UnreachableError(f"opening a shell failed: {exc or type(exc).__name__}", host=remote.name,
                               step="open shell") from None
    return HeldShell(remote, chan)
