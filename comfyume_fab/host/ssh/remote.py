"""`Remote`: one host's SSH connection, opened once (`connect.open_route`) and used for every
channel operation of a task: `run` a command, `pipe_to` another host, `put` a file (SFTP, atomic),
`tunnel` a TCP connection from the host's vantage point, `stream` output as it comes, run
`interactive`ly on this terminal. paramiko keeps ONE "last error" per transport, so channel
OPENINGS are serialized per connection (opening is one round trip) and each failure keeps its own
cause. A broken or overrun channel becomes one `UnreachableError` sentence (`broke`, `overran`)."""
from __future__ import annotations

import dataclasses
import os
import secrets as _random
import select
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import paramiko
from fabric import Connection

from ...errors import TunnelError, UnreachableError
from . import connect
from .connect import Target

CHUNK = 32768
# Set by `--verbose`: called as TRACE(host, command, seconds, exit) after every remote command.
TRACE: Callable[[str, str, float, int], None] | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    command: str
    stdout: str
    stderr: str
    exited: int
    duration: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, n: int = 300) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        return text[-n:]


class Remote:
    """One host's SSH session: `open()` once, then `run`, `put`, `tunnel` over the same transport."""

    def __init__(self, target: Target):
        self.target = target
        self.name = target.name
        self.conn: Connection | None = None
        self.jumps: list[Connection] = []  # the ProxyJump hops, first hop first (closed after conn)
        self._sftp = None
        # paramiko keeps one "last error" per transport: two channel openings that fail at the same
        # time would swap or lose their causes, so openings take turns (each is one round trip).
        self._opening = threading.Lock()

    # -- connection -------------------------------------------------------------------------
    def open(self) -> "Remote":
        self.conn, self.jumps = connect.open_route(self.target)
        return self

    @property
    def transport(self) -> paramiko.Transport:
        assert self.conn is not None and self.conn.transport is not None, "open() first"
        return self.conn.transport

    def close(self) -> None:
        """Best effort, never raises: after a Ctrl-C the SSH library may hold a channel it had
        half opened (registered, not yet bound to its transport), which trips its own close."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - its socket is closed all the same
                connect.drop(conn)
        jumps, self.jumps = self.jumps, []
        connect.close_jumps(jumps)

    def abort(self) -> None:
        """Drop the connection after a Ctrl-C: close its sockets only. The SSH library's own close
        takes its internal locks, and a Ctrl-C that landed while one was held leaves it held for
        good (the close would wait forever). The server sees the connection end; the library's
        reader threads are daemons and stop on the closed socket."""
        conn, self.conn = self.conn, None
        jumps, self.jumps = self.jumps, []
        connect.drop(conn, *jumps)

    def __enter__(self) -> "Remote":
        return self.open()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.abort()
        else:
            self.close()

    def _open_session(self) -> paramiko.Channel:
        """A session channel, opened in turn with this connection's other openings (see __init__)."""
        timeout = self.target.connect_timeout
        t0 = time.monotonic()
        if not self._opening.acquire(timeout=timeout):
            raise paramiko.SSHException("Timeout opening channel.")
        try:
            return self.transport.open_session(timeout=max(0.1, timeout - (time.monotonic() - t0)))
        finally:
            self._opening.release()

    # -- commands ---------------------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, step: str = "run",
            on_line: Callable[[str], None] | None = None, input: bytes | None = None) -> Result:
        """Run one shell command line (already quoted by the builders) and collect its output;
        give up after `timeout` s (default: the target's command_timeout, timeouts.command).
        `on_line` is given each complete line of stdout as it arrives (a build's log, streamed)."""
        if timeout is None:
            timeout = self.target.command_timeout
        t0 = time.monotonic()
        try:
            chan = self._open_session()
            chan.exec_command(command)
            if input is not None:  # e.g. a password for `--password-stdin`: never in argv
                chan.sendall(input)
            chan.shutdown_write()
            out, err = _collect(chan, t0 + timeout, on_line)
            if not chan.status_event.wait(max(0.0, t0 + timeout - time.monotonic())):
                raise socket.timeout()
            code = chan.recv_exit_status()
            chan.close()
        except socket.timeout:
            raise overran(self.name, command, timeout, step) from None
        except paramiko.SSHException as exc:
            if "Timeout opening channel" not in str(exc):
                raise broke(self.name, command, exc, step) from None
            raise UnreachableError(f"the host stopped answering over SSH (no reply within "
                                   f"{self.target.connect_timeout:g} s) before `{short(command)}` could start",
                                   host=self.name, step=step) from None
        except (EOFError, OSError) as exc:
            raise broke(self.name, command, exc, step) from None
        dt = time.monotonic() - t0
        if TRACE is not None:
            TRACE(self.name, command, dt, code)
        return Result(command, out.decode(errors="replace"), err.decode(errors="replace"), code, dt)

    def pipe_to(self, command: str, other: "Remote", other_command: str, *, timeout: float,
                step: str = "copy") -> tuple[Result, Result]:
        """`command` here | `other_command` on `other`: this host's stdout streamed to the other
        host's stdin over the two SSH connections (through this machine), in CHUNK pieces, within
        `timeout` s; both results (their stdout holds nothing of the piped data)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            src = self.transport.open_session(timeout=self.target.connect_timeout)
            dst = other.transport.open_session(timeout=other.target.connect_timeout)
            src.exec_command(command)
            src.shutdown_write()
            dst.exec_command(other_command)
            src_err, dst_out = bytearray(), bytearray()
            while True:
                moved = False
                if src.recv_ready():
                    data = src.recv(CHUNK)
                    if data:
                        dst.sendall(data)
                        moved = True
                while src.recv_stderr_ready():
                    src_err += src.recv_stderr(CHUNK)
                    moved = True
                while dst.recv_ready():
                    dst_out += dst.recv(CHUNK)
                if src.eof_received and not src.recv_ready():
                    break
                if time.monotonic() > deadline:
                    raise socket.timeout()
                if not moved:
                    select.select([src], [], [], 0.2)
            dst.shutdown_write()
            src_code = src.recv_exit_status()
            rest_out, rest_err = _collect(dst, deadline)
            dst_code = dst.recv_exit_status()
        except socket.timeout:
            raise UnreachableError(f"copying `{short(command)}` to {other.name} did not finish within {timeout:g} s",
                                   host=self.name, step=step) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise UnreachableError(f"the SSH connection broke while copying to {other.name}: "
                                   f"{exc or type(exc).__name__}", host=self.name, step=step) from None
        dt = time.monotonic() - t0
        return (Result(command, "", src_err.decode(errors="replace"), src_code, dt),
                Result(other_command, (bytes(dst_out) + rest_out).decode(errors="replace"),
                       rest_err.decode(errors="replace"), dst_code, dt))

    # -- files ------------------------------------------------------------------------------
    def sftp(self):
        if self._sftp is None:
            # Bounded like a command: without a timeout a request on a dead connection waits forever
            # (and paramiko's default wait for a channel is an hour).
            chan = self._open_session()
            chan.settimeout(self.target.command_timeout)
            chan.invoke_subsystem("sftp")
            self._sftp = paramiko.SFTPClient(chan)
        return self._sftp

    def put(self, path: str, data: bytes, mode: int = 0o600,
            on_chunk: Callable[[int], None] | None = None) -> None:
        """Write `data` to `path` atomically: a temporary file made `mode` before any byte is
        written, then renamed over the target. A dropped connection leaves the old file in use."""
        tmp = f"{path}.part-{_random.token_hex(4)}"
        try:
            sftp = self.sftp()
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)
                for i in range(0, len(data), CHUNK):
                    f.write(data[i:i + CHUNK])
                    if on_chunk:
                        on_chunk(i + CHUNK)
            sftp.posix_rename(tmp, path)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise UnreachableError(f"uploading {path} failed: {exc or type(exc).__name__}; the previous "
                                   "file (if any) is still the one in use", host=self.name, step="upload") from None

    # -- tunnels ----------------------------------------------------------------------------
    @contextmanager
    def tunnel(self, host: str, port: int, timeout: float) -> Iterator[socket.socket]:
        """A local socket whose far end is a TCP connection that THIS host opens to host:port:
        the vantage point is the remote host, exactly as its own processes would connect."""
        try:
            t0 = time.monotonic()
            if not self._opening.acquire(timeout=timeout):
                raise paramiko.SSHException("Timeout opening channel.")
            try:
                chan = self.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                                   timeout=max(0.1, timeout - (time.monotonic() - t0)))
            finally:
                self._opening.release()
        except paramiko.ChannelException as exc:
            kind = "refused" if exc.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED else "prohibited"
            raise TunnelError(kind, f"{self.name} could not connect to {host}:{port} ({exc.text})",
                              host=self.name) from None
        except paramiko.SSHException as exc:
            if "Timeout" in str(exc):
                raise TunnelError("timeout", f"{self.name} got no answer from {host}:{port} within {timeout:g} s",
                                  host=self.name) from None
            raise TunnelError("broken", f"opening a connection from {self.name} to {host}:{port} failed: {exc}",
                              host=self.name) from None
        local, far = socket.socketpair()
        stop = threading.Event()
        pump = threading.Thread(target=_pump, args=(far, chan, stop), daemon=True)
        pump.start()
        try:
            yield local
        finally:
            stop.set()
            local.close()
            pump.join(2)
            far.close()
            chan.close()

    # -- streams (issue 14: logs, exec, watch) ------------------------------------------------
    def stream(self, command: str, on_out: Callable[[bytes], None], *, on_err: Callable[[bytes], None] | None = None,
               pty: bool = False, stop: threading.Event | None = None, step: str = "stream") -> int | None:
        """Run `command` and hand its output to `on_out` (stderr to `on_err`, default `on_out`) chunk
        by chunk as it arrives. With `pty` the command gets a pseudo-terminal, so closing the channel
        makes sshd hang it up (SIGHUP to its process group): nothing is left running on the host.
        Returns the exit code, or None when `stop` was set (the channel is then closed)."""
        on_err = on_err or on_out
        try:
            chan = self.transport.open_session(timeout=self.target.connect_timeout)
            if pty:
                chan.get_pty(term="dumb", width=500, height=50)
            chan.exec_command(command)
            if not pty:
                chan.shutdown_write()
            while True:
                if stop is not None and stop.is_set():
                    chan.close()
                    return None
                got = False
                while chan.recv_ready():
                    data = chan.recv(CHUNK)
                    if data:
                        on_out(data)
                        got = True
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(CHUNK)
                    if data:
                        on_err(data)
                        got = True
                if got:
                    continue
                if chan.exit_status_ready() and chan.eof_received:
                    if chan.recv_ready() or chan.recv_stderr_ready():
                        continue  # output that came in with the exit status
                    code = chan.recv_exit_status()
                    chan.close()
                    return code
                if chan.closed:  # closed by the far end without an exit status
                    return -1
                if not self.transport.is_active():
                    raise EOFError("the connection closed")
                select.select([chan], [], [], 0.2)
        except paramiko.SSHException as exc:
            raise broke(self.name, command, exc, step) from None
        except (EOFError, OSError) as exc:
            raise broke(self.name, command, exc, step) from None

    def interactive(self, command: str, step: str = "exec") -> int:
        """Run `command` on a pseudo-terminal wired to this terminal (raw mode, window size, stdin
        forwarded) until it exits; returns its exit code. The terminal is restored afterwards."""
        import shutil
        import sys
        import termios
        import tty
        size = shutil.get_terminal_size()
        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd) if os.isatty(fd) else None
        try:
            chan = self.transport.open_session(timeout=self.target.connect_timeout)
            chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
            chan.exec_command(command)
            if old is not None:
                tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
            out = sys.stdout.buffer
            while True:
                readable, _, _ = select.select([chan, fd], [], [], 0.5)
                if chan in readable:
                    if chan.recv_ready():
                        out.write(chan.recv(CHUNK))
                        out.flush()
                    elif chan.exit_status_ready() or chan.closed or chan.eof_received:
                        break
                if fd in readable:
                    data = os.read(fd, 1024)
                    if not data:
                        chan.shutdown_write()
                    else:
                        chan.sendall(data)
                if chan.exit_status_ready() and not chan.recv_ready():
                    break
            code = chan.recv_exit_status()
            chan.close()
            return code
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise broke(self.name, command, exc, step) from None
        finally:
            if old is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _collect(chan: paramiko.Channel, deadline: float,
             on_line: Callable[[str], None] | None = None) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    shown = 0  # how much of `out` on_line has been given
    while True:
        got = False
        while chan.recv_ready():
            out += chan.recv(CHUNK)
            got = True
        if on_line is not None and got:
            end = out.rfind(b"\n") + 1
            if end > shown:
                for line in bytes(out[shown:end]).decode(errors="replace").splitlines():
                    on_line(line)
                shown = end
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(CHUNK)
            got = True
        if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
            return bytes(out), bytes(err)
        if got:
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        select.select([chan], [], [], min(remaining, 0.5))


def _pump(sock: socket.socket, chan: paramiko.Channel, stop: threading.Event) -> None:
    sock_open = True
    try:
        while not stop.is_set():
            readable, _, _ = select.select([chan, sock] if sock_open else [chan], [], [], 0.2)
            if sock in readable:
                data = sock.recv(CHUNK)
                if data:
                    chan.sendall(data)
                else:  # the local client is done sending; keep delivering the answer
                    chan.shutdown_write()
                    sock_open = False
            if chan in readable:
                if chan.recv_ready():
                    sock.sendall(chan.recv(CHUNK))
                elif chan.eof_received or chan.closed:
                    break
    except (OSError, paramiko.SSHException, EOFError):
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def broke(name: str, command: str, exc: BaseException, step: str) -> UnreachableError:
    """The one sentence for a connection that broke while `command` ran (any channel kind)."""
    return UnreachableError(f"the SSH connection broke while running `{short(command)}`: "
                            f"{exc or type(exc).__name__}", host=name, step=step)


def overran(name: str, command: str, timeout: float, step: str) -> UnreachableError:
    return UnreachableError(f"`{short(command)}` did not finish within {timeout:g} s", host=name, step=step)


def short(command: str, n: int = 80) -> str:
    return command if len(command) <= n else command[: n - 3] + "..."
