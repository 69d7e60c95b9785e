"""The ONLY module that opens SSH: one connection per host per task, reused for every
command, upload and tunnel. Host keys are checked strictly against known_hosts.

Fabric's `Connection` resolves ssh_config (aliases, User, Port, IdentityFile, IdentitiesOnly,
ProxyJump); the rest is done here, the way OpenSSH does it:
- host keys: Fabric's default policy auto-accepts unknown keys; it is replaced by RejectPolicy
  (or accept-new) before the first connect, for the target AND for every ProxyJump hop;
- authentication (`_OpenSSHKeys`): keys held by ssh-agent, then the identity files (the
  inventory's identity_file, else ssh_config IdentityFile, else ~/.ssh/id_*); a passphrase-
  protected file is used through the agent; `IdentitiesOnly yes` limits the agent to those files.
  A refusal names every key offered and why it was not accepted;
- jump hosts: Fabric would build each hop itself (auto-accept, no timeout, default auth), so the
  hops are built here with the target's policy, known_hosts, timeouts and authentication;
- channels: paramiko keeps ONE "last error" per transport, so channel OPENINGS are serialized per
  connection (opening is one round trip) and each failure keeps its own cause.
Low-level errors (socket, paramiko) become `UnreachableError` sentences naming the host and the
step, once, here.
"""
from __future__ import annotations

import base64
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

from paramiko.auth_strategy import AuthFailure, AuthResult, AuthStrategy, InMemoryPrivateKey

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


DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


def _known_name(conn: Connection) -> str:
    """The name a host has in known_hosts: `host`, or `[host]:port` off port 22 (as OpenSSH writes it)."""
    return conn.host if int(conn.port) == 22 else f"[{conn.host}]:{conn.port}"


def _jump_hops(conn: Connection) -> list[str]:
    """The ProxyJump hops of `conn` from its ssh_config, first hop first ([] for none)."""
    value = conn.ssh_config.get("proxyjump", "")
    if not value or value.strip().lower() == "none":
        return []
    return [hop.strip() for hop in value.split(",") if hop.strip()]


def _identity_files(explicit: list[str], from_config: list[str], extra: list[str]) -> list[str]:
    """The files OpenSSH would try: the inventory's identity_file and ssh_config IdentityFile
    (in that order), then `extra` (a jump hop also tries the target's identity_file); the
    default ~/.ssh/id_* when none is named."""
    out: list[str] = []
    for path in [*explicit, *from_config, *extra]:
        if path and path not in out:
            out.append(path)
    if not out:
        out = [p for p in DEFAULT_IDENTITIES if os.path.exists(os.path.expanduser(p))]
    return out


def _public_blob(path: str) -> bytes | None:
    """The public key of a private key file from its `.pub` beside it (readable without a passphrase)."""
    try:
        with open(path + ".pub") as fh:
            fields = fh.read(65536).split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError, IndexError):
        return None


def _why_unusable(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, paramiko.PasswordRequiredException) or "encrypted" in text.lower() \
            or "password" in text.lower() or "passphrase" in text.lower():
        return "protected by a passphrase and not loaded in ssh-agent"
    if isinstance(exc, PermissionError):
        return "not readable by this user"
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    return "not a private key this tool can read (a .pub file, or another file?)"


class _Key(InMemoryPrivateKey):
    """A key offered to the server, with how to name it in a message."""

    def __init__(self, username: str, pkey: paramiko.PKey, label: str):
        super().__init__(username=username, pkey=pkey)
        self.label = label


class _OpenSSHKeys(AuthStrategy):
    """Public-key authentication in OpenSSH's order: agent keys that match an identity file,
    the other agent keys (not with IdentitiesOnly), then identity files the agent does not hold.
    No password prompt: the tool runs unattended. `notes` keeps the keys that could not be offered."""

    def __init__(self, username: str, files: list[str], explicit: list[str], identities_only: bool,
                 use_agent: bool = True):
        super().__init__(ssh_config=None)
        self.username = username
        self.files = files
        self.explicit = explicit
        self.identities_only = identities_only
        self.use_agent = use_agent
        self.notes: list[str] = []
        self.agent_count = 0
        self.agent = None

    def get_sources(self):
        on_disk = []  # (path, pkey or None, public blob or None, why unusable)
        for path in self.files:
            full = os.path.expanduser(path)
            pub = _public_blob(full)
            try:
                pkey, why = paramiko.PKey.from_path(full), ""
                pub = pub or pkey.asbytes()
            except Exception as exc:  # noqa: BLE001 - any unreadable key is reported, not raised
                pkey, why = None, _why_unusable(exc)
            on_disk.append((path, pkey, pub, why))
        agent_keys: list = []
        if self.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            try:
                self.agent = paramiko.Agent()
                agent_keys = list(self.agent.get_keys())
            except paramiko.SSHException as exc:
                self.notes.append(f"ssh-agent at $SSH_AUTH_SOCK did not answer ({exc})")
        self.agent_count = len(agent_keys)
        wanted = [pub for _, _, pub, _ in on_disk if pub]
        matching = [k for k in agent_keys if k.asbytes() in wanted]
        others = [k for k in agent_keys if k.asbytes() not in wanted]
        if self.identities_only and others:
            self.notes.append(f"{len(others)} other ssh-agent key(s) not offered (IdentitiesOnly yes)")
        for key in matching + ([] if self.identities_only else others):
            comment = f" ({key.comment})" if getattr(key, "comment", "") else ""
            yield _Key(self.username, key, f"ssh-agent key {key.get_name()} {key.fingerprint}{comment}")
        in_agent = {k.asbytes() for k in matching}
        for path, pkey, pub, why in on_disk:
            if pub is not None and pub in in_agent:
                continue  # offered through the agent already
            if pkey is None:
                self.notes.append(f"{path}: {why}")
                continue
            yield _Key(self.username, pkey, f"{path} ({pkey.get_name()} {pkey.fingerprint})")

    def authenticate(self, transport):
        try:
            return super().authenticate(transport)
        finally:
            if self.agent is not None:
                self.agent.close()

    def explain(self, result: AuthResult) -> str:
        """One clause: each key offered and the server's answer, then the keys not offered and why."""
        parts = []
        for source, outcome in result:
            parts.append(f"{getattr(source, 'label', source)}: {_refusal(outcome)}")
        offered = ("offered " + "; ".join(parts)) if parts else "no key was offered"
        if not parts and not self.use_agent:
            offered += " (IdentityAgent none)"
        elif not parts and not os.environ.get("SSH_AUTH_SOCK"):
            offered += " (no ssh-agent: SSH_AUTH_SOCK is not set"
            offered += ", and no identity file was found)" if not self.files else ")"
        elif not parts and self.agent_count == 0 and self.use_agent:
            offered += " (ssh-agent holds no keys)"
        if self.notes:
            offered += "; not offered: " + "; ".join(self.notes)
        return offered

    def hint(self, user: str | None, label: str) -> str:
        if any("not a private key" in n for n in self.notes):
            return ("identity_file in hosts.yaml (or IdentityFile in ssh_config) must be a private key file "
                    "(e.g. ~/.ssh/id_ed25519), not a .pub or another file")
        if any("passphrase" in n for n in self.notes):
            return "load the key into ssh-agent with `ssh-add KEYFILE` (its passphrase is asked once there)"
        return (f"add the matching public key to ~{user or ''}/.ssh/authorized_keys on {label}, or name the "
                "right key with identity_file in hosts.yaml / IdentityFile in ssh_config, or `ssh-add` it")


def _refusal(outcome) -> str:
    if isinstance(outcome, paramiko.BadAuthenticationType):
        return f"the server does not take public keys (it allows: {', '.join(outcome.allowed_types)})"
    if isinstance(outcome, paramiko.AuthenticationException):
        return "refused by the server"
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__}: {outcome}" if str(outcome) else type(outcome).__name__
    return "accepted"


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
        self.jumps: list[Connection] = []  # the ProxyJump hops, first hop first (closed after conn)
        self._sftp = None
        # paramiko keeps one "last error" per transport: two channel openings that fail at the same
        # time would swap or lose their causes, so openings take turns (each is one round trip).
        self._opening = threading.Lock()

    # -- connection -------------------------------------------------------------------------
    def open(self) -> "Remote":
        t = self.target
        config = Config(runtime_ssh_path=os.path.expanduser(t.ssh_config)) if t.ssh_config else Config()
        conn = self._connection(t.address, config, user=t.user, port=t.port)
        hops = _jump_hops(conn)
        if any(Connection.derive_shorthand(conn, hop)["host"] in (t.address, conn.host) for hop in hops):
            hops = []  # `Host *` + ProxyJump reaching the jump host itself: no hop (as Fabric does)
        command = conn.ssh_config.get("proxycommand", "")
        if not hops and command and command.strip().lower() != "none":
            conn.gateway = command  # ProxyCommand: Fabric runs it (a local process, no SSH of its own)
        # Each hop is a Connection made here without Fabric's gateway resolution (which auto-accepts
        # and, with `Host *` + ProxyJump, recurses without end): the chain below is the route.
        chain = [(f"jump host {hop}", self._connection(hop, config)) for hop in hops]
        sock = None
        try:
            for index, (label, jump) in enumerate(chain):
                self._connect(jump, sock, label, extra_files=[t.identity_file] if t.identity_file else [])
                self.jumps.append(jump)
                nxt_label, nxt = chain[index + 1] if index + 1 < len(chain) else (conn.host, conn)
                sock = self._hop_channel(jump, label, nxt.host, int(nxt.port))
            self._connect(conn, sock, conn.host, explicit=[t.identity_file] if t.identity_file else [])
        except KeyboardInterrupt:
            _drop(conn, *self.jumps)  # no library close after a Ctrl-C (see abort)
            self.jumps = []
            raise
        except BaseException:
            conn.close()  # a refused login leaves paramiko's transport open otherwise
            self._close_jumps()
            raise
        self.conn = conn
        return self

    def _connection(self, address: str, config: Config, user: str | None = None,
                    port: int | None = None) -> Connection:
        """A Fabric Connection (ssh_config resolved) with this tool's connect timeouts and no gateway
        of Fabric's making (`open` builds ProxyJump hops itself); not opened."""
        t = self.target
        kwargs: dict = {"banner_timeout": t.connect_timeout, "auth_timeout": t.connect_timeout}
        return Connection(address, user=user, port=port, config=config, connect_timeout=t.connect_timeout,
                          connect_kwargs=kwargs, gateway=False)

    def _hop_channel(self, jump: Connection, label: str, host: str, port: int) -> paramiko.Channel:
        """The direct-tcpip channel through `jump` that carries the next hop's SSH connection."""
        t = self.target
        try:
            return jump.transport.open_channel("direct-tcpip", (host, port), ("", 0), timeout=t.connect_timeout)
        except paramiko.ChannelException as exc:
            raise UnreachableError(f"{label} could not connect to {host}:{port} ({exc.text})", host=self.name,
                                   step="connect", hint="check ProxyJump and HostName in the ssh_config, and "
                                   "that the next host's sshd is reachable from the jump host") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise UnreachableError(f"{label} did not open a connection to {host}:{port} within "
                                   f"{t.connect_timeout:g} s ({exc or type(exc).__name__})", host=self.name,
                                   step="connect", hint="is the next host up, and reachable from the jump host?") from None

    def _connect(self, conn: Connection, sock, label: str, explicit: list[str] = (),
                 extra_files: list[str] = ()) -> None:
        """Open `conn` (through `sock` when given) with strict host keys and OpenSSH-style keys;
        every failure is one sentence that names `label` (the host, or `jump host X`)."""
        t = self.target
        known = Path(os.path.expanduser(t.known_hosts))
        if known.exists():
            conn.client.load_host_keys(str(known))
        conn.client.set_missing_host_key_policy(
            _AcceptNewPolicy(known) if t.accept_new_host_keys else paramiko.RejectPolicy())
        files = _identity_files(explicit, conn.ssh_config.get("identityfile", []), extra_files)
        strategy = _OpenSSHKeys(conn.user, files, explicit=list(explicit),
                                identities_only=conn.ssh_config.get("identitiesonly", "no").lower() == "yes",
                                use_agent=conn.ssh_config.get("identityagent", "").lower() != "none")
        conn.connect_kwargs["auth_strategy"] = strategy
        if sock is not None:
            conn.connect_kwargs["sock"] = sock
        where = f"{conn.host}:{conn.port}"
        is_jump = label.startswith("jump host")
        who = f"{label} ({_known_name(conn)})" if is_jump else conn.host  # a jump is named as in ssh_config
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise UnreachableError(
                f"the SSH host key of {who} has CHANGED since it was recorded in {known}; "
                "refusing to connect (this is what a man-in-the-middle looks like)",
                host=self.name, step="connect",
                hint=f"if the host was rebuilt, verify its new key, then `ssh-keygen -R {_known_name(conn)} "
                     f"-f {known}`") from None
        except AuthFailure as exc:
            raise UnreachableError(f"SSH login as {conn.user}@{label} was refused: {strategy.explain(exc.result)}",
                                   host=self.name, step="connect", hint=strategy.hint(conn.user, label)) from None
        except paramiko.AuthenticationException as exc:
            raise UnreachableError(f"SSH login as {conn.user}@{label} was refused ({exc})",
                                   host=self.name, step="connect", hint=strategy.hint(conn.user, label)) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise UnreachableError(
                    f"{who} is not in {known}; refusing an unknown host key",
                    host=self.name, step="connect",
                    hint="add it with `ssh-keyscan` after checking the fingerprint, or set "
                         f"ssh.accept_new_host_keys: true to trust it on first use (`ssh-keyscan -p {conn.port} "
                         f"{conn.host} >> {known}`)") from None
            raise UnreachableError(f"SSH to {'' if not is_jump else label + ' '}{where} failed: {exc}", host=self.name,
                                   step="connect", hint="check that sshd runs on the host") from None
        except (socket.timeout, TimeoutError):
            raise UnreachableError(f"cannot reach {'' if not is_jump else label + ' '}{where} (no answer within "
                                   f"{t.connect_timeout:g} s)", host=self.name, step="connect",
                                   hint="is the host up and the address in hosts.yaml (or ssh_config) right?") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused"
            raise UnreachableError(f"cannot reach {'' if not is_jump else label + ' '}{where} ({reason})",
                                   host=self.name, step="connect",
                                   hint="is sshd running and the address right?") from None
        except EOFError:
            raise UnreachableError(f"{who} ({where}) closed the SSH connection during the handshake",
                                   host=self.name, step="connect", hint="check the host's sshd log") from None

    def _close_jumps(self) -> None:
        jumps, self.jumps = self.jumps, []
        for jump in reversed(jumps):
            try:
                jump.close()
            except Exception:  # noqa: BLE001 - best effort, as close() below
                pass

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
                _drop(conn)
        self._close_jumps()

    def abort(self) -> None:
        """Drop the connection after a Ctrl-C: close its sockets only. The SSH library's own close
        takes its internal locks, and a Ctrl-C that landed while one was held leaves it held for
        good (the close would wait forever). The server sees the connection end; the library's
        reader threads are daemons and stop on the closed socket."""
        conn, self.conn = self.conn, None
        jumps, self.jumps = self.jumps, []
        _drop(conn, *jumps)

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
            raise _overran(self.name, command, timeout, step) from None
        except paramiko.SSHException as exc:
            if "Timeout opening channel" not in str(exc):
                raise _broke(self.name, command, exc, step) from None
            raise UnreachableError(f"the host stopped answering over SSH (no reply within "
                                   f"{self.target.connect_timeout:g} s) before `{_short(command)}` could start",
                                   host=self.name, step=step) from None
        except (EOFError, OSError) as exc:
            raise _broke(self.name, command, exc, step) from None
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
            raise _broke(self.name, command, exc, step) from None
        except (EOFError, OSError) as exc:
            raise _broke(self.name, command, exc, step) from None

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
            raise _broke(self.name, command, exc, step) from None
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


def _drop(*connections) -> None:
    """Close the TCP sockets under these connections without taking any of the SSH library's locks
    (see Remote.abort); a hop's socket that is a channel of another connection ends with that one."""
    for c in connections:
        transport = getattr(c, "transport", None)
        if transport is None:
            continue
        transport.active = False
        sock = getattr(transport, "sock", None)
        if sock is not None and not isinstance(sock, paramiko.Channel):  # a socket, or a ProxyCommand
            try:
                sock.close()
            except Exception:  # noqa: BLE001 - best effort
                pass


def _broke(name: str, command: str, exc: BaseException, step: str) -> UnreachableError:
    """The one sentence for a connection that broke while `command` ran (any channel kind)."""
    return UnreachableError(f"the SSH connection broke while running `{_short(command)}`: "
                            f"{exc or type(exc).__name__}", host=name, step=step)


def _overran(name: str, command: str, timeout: float, step: str) -> UnreachableError:
    return UnreachableError(f"`{_short(command)}` did not finish within {timeout:g} s", host=name, step=step)


def _short(command: str, n: int = 80) -> str:
    return command if len(command) <= n else command[: n - 3] + "..."


class HeldShell:
    """One shell kept open on a host's connection (`Remote.open_shell`): `run` sends a command line
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
            raise _overran(self.name, command, timeout, step) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _broke(self.name, command, exc, step) from None
        dt = time.monotonic() - t0
        if TRACE is not None:
            TRACE(self.name, command, dt, code)
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
