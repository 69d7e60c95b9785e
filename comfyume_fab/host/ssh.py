"""The ONLY module that opens SSH: one connection per host per task, reused for every
command, upload and tunnel. Host keys are checked strictly against known_hosts.

Fabric's `Connection` resolves ssh_config (aliases, IdentityFile, ProxyJump) and connects;
its default policy auto-accepts unknown host keys, so that policy is replaced here before
the first connect. Low-level errors (socket, paramiko) become `UnreachableError` sentences
naming the host and the step, once, here.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets as _random
import select
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import paramiko
from fabric import Config, Connection

from ..errors import TunnelError, UnreachableError

CHUNK = 32768
# Set by `--verbose`: called as TRACE(host, command, seconds, exit) after every remote command.
TRACE: Callable[[str, str, float, int], None] | None = None

# paramiko logs channel failures at ERROR; they become sentences here instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


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


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a host never seen before and append it to known_hosts (a CHANGED key is still refused:
    paramiko raises BadHostKeyException before any policy is asked)."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclasses.dataclass(frozen=True)
class Target:
    """What remote.py needs to know about a host (built from the inventory's Host)."""

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_keys: bool = False
    ssh_config: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0  # default bound of one remote command and of each SFTP request


class Remote:
    """One host's SSH session: `open()` once, then `run`, `put`, `tunnel` over the same transport."""

    def __init__(self, target: Target):
        self.target = target
        self.name = target.name
        self.conn: Connection | None = None
        self._sftp = None

    # -- connection -------------------------------------------------------------------------
    def open(self) -> "Remote":
        t = self.target
        config = Config(runtime_ssh_path=os.path.expanduser(t.ssh_config)) if t.ssh_config else Config()
        kwargs: dict = {"allow_agent": False, "banner_timeout": t.connect_timeout,
                        "auth_timeout": t.connect_timeout}
        if t.identity_file:
            kwargs["key_filename"] = [os.path.expanduser(t.identity_file)]
            kwargs["look_for_keys"] = False
        conn = Connection(t.address, user=t.user, port=t.port, config=config,
                          connect_timeout=int(t.connect_timeout), connect_kwargs=kwargs)
        known = Path(os.path.expanduser(t.known_hosts))
        if known.exists():
            conn.client.load_host_keys(str(known))
        conn.client.set_missing_host_key_policy(
            _AcceptNewPolicy(known) if t.accept_new_host_keys else paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise UnreachableError(
                f"the SSH host key of {conn.host} has CHANGED since it was recorded in {known}; "
                "refusing to connect (this is what a man-in-the-middle looks like)",
                host=self.name, step="connect",
                hint=f"if the host was rebuilt, verify its new key, then `ssh-keygen -R {conn.host} -f {known}`") from None
        except paramiko.AuthenticationException:
            raise UnreachableError(
                f"SSH login as {conn.user}@{conn.host} was refused (authentication failed)",
                host=self.name, step="connect",
                hint="check identity_file in hosts.yaml and the key in the host's authorized_keys") from None
        except paramiko.SSHException as exc:
            if t.identity_file and "private key" in str(exc):
                raise UnreachableError(f"cannot use the SSH key {t.identity_file}: {exc}", host=self.name,
                                       step="connect", hint="identity_file in hosts.yaml must be a private key "
                                       "file (e.g. ~/.ssh/id_ed25519), not a .pub or another file") from None
            if "not found in known_hosts" in str(exc):
                raise UnreachableError(
                    f"{conn.host} is not in {known}; refusing an unknown host key",
                    host=self.name, step="connect",
                    hint="add it with `ssh-keyscan` after checking the fingerprint, or set "
                         "ssh.accept_new_host_keys: true to trust it on first use") from None
            raise UnreachableError(f"SSH to {conn.host}:{conn.port} failed: {exc}", host=self.name,
                                   step="connect", hint="check that sshd runs on the host") from None
        except (socket.timeout, TimeoutError):
            raise UnreachableError(f"cannot reach {conn.host}:{conn.port} (no answer within "
                                   f"{t.connect_timeout:g} s)", host=self.name, step="connect",
                                   hint="is the host up and the address in hosts.yaml right?") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused"
            raise UnreachableError(f"cannot reach {conn.host}:{conn.port} ({reason})", host=self.name,
                                   step="connect", hint="is sshd running and the address right?") from None
        self.conn = conn
        return self

    @property
    def transport(self) -> paramiko.Transport:
        assert self.conn is not None and self.conn.transport is not None, "open() first"
        return self.conn.transport

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Remote":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

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
            chan = self.transport.open_session(timeout=self.target.connect_timeout)
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
            raise UnreachableError(f"`{_short(command)}` did not finish within {timeout:g} s",
                                   host=self.name, step=step) from None
        except paramiko.SSHException as exc:
            if "Timeout opening channel" not in str(exc):
                raise UnreachableError(f"the SSH connection broke while running `{_short(command)}`: "
                                       f"{exc or type(exc).__name__}", host=self.name, step=step) from None
            raise UnreachableError(f"the host stopped answering over SSH (no reply within "
                                   f"{self.target.connect_timeout:g} s) before `{_short(command)}` could start",
                                   host=self.name, step=step) from None
        except (EOFError, OSError) as exc:
            raise UnreachableError(f"the SSH connection broke while running `{_short(command)}`: "
                                   f"{exc or type(exc).__name__}", host=self.name, step=step) from None
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
            raise UnreachableError(f"copying `{_short(command)}` to {other.name} did not finish within {timeout:g} s",
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
            chan = self.transport.open_session(timeout=self.target.connect_timeout)
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
            chan = self.transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
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


def _short(command: str, n: int = 80) -> str:
    return command if len(command) <= n else command[: n - 3] + "..."
