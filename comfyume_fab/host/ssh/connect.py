"""Connecting to a host: `Target` (what a host is, from the inventory) and `open_route`, which opens
its Fabric `Connection` through any ProxyJump hops, each with strict host keys (`hostkeys`) and
OpenSSH-style keys (`auth`). Fabric would build each hop itself (auto-accept, no timeout, default
auth, and with `Host *` + ProxyJump a recursion without end), so the hops are built here. Each
failure becomes one `UnreachableError` sentence naming the host and the step, once, here.
`close_route` and `drop` end a route (politely, or after a Ctrl-C without the library's locks)."""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import paramiko
from fabric import Config, Connection
from paramiko.auth_strategy import AuthFailure

from ...errors import UnreachableError
from ...inventory.model import KNOWN_HOSTS
from . import auth, hostkeys


@dataclasses.dataclass(frozen=True)
class Target:
    """What the SSH edge needs to know about a host (built from the inventory's Host)."""

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = KNOWN_HOSTS
    # host keys this tool generated itself (rented instances), checked before known_hosts
    tool_known_hosts: str | None = None
    accept_new_host_keys: bool = False
    ssh_config: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0  # default bound of one remote command and of each SFTP request


def jump_hops(conn: Connection) -> list[str]:
    """The ProxyJump hops of `conn` from its ssh_config, first hop first ([] for none)."""
    value = conn.ssh_config.get("proxyjump", "")
    if not value or value.strip().lower() == "none":
        return []
    return [hop.strip() for hop in value.split(",") if hop.strip()]


def open_route(t: Target) -> tuple[Connection, list[Connection]]:
    """The target's open connection and its open jump hosts (first hop first), or an
    `UnreachableError`; nothing is left open when it fails."""
    config = Config(runtime_ssh_path=os.path.expanduser(t.ssh_config)) if t.ssh_config else Config()
    conn = _connection(t, t.address, config, user=t.user, port=t.port)
    hops = jump_hops(conn)
    if any(Connection.derive_shorthand(conn, hop)["host"] in (t.address, conn.host) for hop in hops):
        hops = []  # `Host *` + ProxyJump reaching the jump host itself: no hop (as Fabric does)
    command = conn.ssh_config.get("proxycommand", "")
    if not hops and command and command.strip().lower() != "none":
        conn.gateway = command  # ProxyCommand: Fabric runs it (a local process, no SSH of its own)
    # Each hop is a Connection made here without Fabric's gateway resolution (which auto-accepts
    # and, with `Host *` + ProxyJump, recurses without end): the chain below is the route.
    chain = [(f"jump host {hop}", _connection(t, hop, config)) for hop in hops]
    jumps: list[Connection] = []
    sock = None
    try:
        for index, (label, jump) in enumerate(chain):
            _open(t, jump, sock, label, extra_files=[t.identity_file] if t.identity_file else [])
            jumps.append(jump)
            nxt_label, nxt = chain[index + 1] if index + 1 < len(chain) else (conn.host, conn)
            sock = _hop_channel(t, jump, label, nxt.host, int(nxt.port))
        _open(t, conn, sock, conn.host, explicit=[t.identity_file] if t.identity_file else [])
    except KeyboardInterrupt:
        drop(conn, *jumps)  # no library close after a Ctrl-C (see Remote.abort)
        raise
    except BaseException:
        conn.close()  # a refused login leaves paramiko's transport open otherwise
        close_jumps(jumps)
        raise
    return conn, jumps


def _connection(t: Target, address: str, config: Config, user: str | None = None,
                port: int | None = None) -> Connection:
    """A Fabric Connection (ssh_config resolved) with this tool's connect timeouts and no gateway
    of Fabric's making (`open_route` builds ProxyJump hops itself); not opened."""
    kwargs: dict = {"banner_timeout": t.connect_timeout, "auth_timeout": t.connect_timeout}
    return Connection(address, user=user, port=port, config=config, connect_timeout=t.connect_timeout,
                      connect_kwargs=kwargs, gateway=False)


def _hop_channel(t: Target, jump: Connection, label: str, host: str, port: int) -> paramiko.Channel:
    """The direct-tcpip channel through `jump` that carries the next hop's SSH connection."""
    try:
        return jump.transport.open_channel("direct-tcpip", (host, port), ("", 0), timeout=t.connect_timeout)
    except paramiko.ChannelException as exc:
        raise UnreachableError(f"{label} could not connect to {host}:{port} ({exc.text})", host=t.name,
                               step="connect", hint="check ProxyJump and HostName in the ssh_config, and "
                               "that the next host's sshd is reachable from the jump host") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise UnreachableError(f"{label} did not open a connection to {host}:{port} within "
                               f"{t.connect_timeout:g} s ({exc or type(exc).__name__})", host=t.name,
                               step="connect", hint="is the next host up, and reachable from the jump host?") from None


def _open(t: Target, conn: Connection, sock, label: str, explicit: list[str] = (),
          extra_files: list[str] = ()) -> None:
    """Open `conn` (through `sock` when given) with strict host keys and OpenSSH-style keys;
    every failure is one sentence that names `label` (the host, or `jump host X`)."""
    known = Path(os.path.expanduser(t.known_hosts))
    hostkeys.enforce(conn, known, t.accept_new_host_keys,
                     Path(t.tool_known_hosts) if t.tool_known_hosts else None)
    strategy = auth.for_connection(conn, explicit, extra_files)
    conn.connect_kwargs["auth_strategy"] = strategy
    if sock is not None:
        conn.connect_kwargs["sock"] = sock
    where = f"{conn.host}:{conn.port}"
    is_jump = label.startswith("jump host")
    who = f"{label} ({hostkeys.known_name(conn)})" if is_jump else conn.host  # a jump is named as in ssh_config
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise hostkeys.changed(t.name, who, conn, known) from None
    except AuthFailure as exc:
        raise UnreachableError(f"SSH login as {conn.user}@{label} was refused: {strategy.explain(exc.result)}",
                               host=t.name, step="connect", hint=strategy.hint(conn.user, label)) from None
    except paramiko.AuthenticationException as exc:
        raise UnreachableError(f"SSH login as {conn.user}@{label} was refused ({exc})",
                               host=t.name, step="connect", hint=strategy.hint(conn.user, label)) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise hostkeys.unknown(t.name, who, conn, known) from None
        raise UnreachableError(f"SSH to {'' if not is_jump else label + ' '}{where} failed: {exc}", host=t.name,
                               step="connect", hint="check that sshd runs on the host") from None
    except (socket.timeout, TimeoutError):
        raise UnreachableError(f"cannot reach {'' if not is_jump else label + ' '}{where} (no answer within "
                               f"{t.connect_timeout:g} s)", host=t.name, step="connect",
                               hint="is the host up and the address in hosts.yaml (or ssh_config) right?") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reason = "connection refused"
        raise UnreachableError(f"cannot reach {'' if not is_jump else label + ' '}{where} ({reason})",
                               host=t.name, step="connect",
                               hint="is sshd running and the address right?") from None
    except EOFError:
        raise UnreachableError(f"{who} ({where}) closed the SSH connection during the handshake",
                               host=t.name, step="connect", hint="check the host's sshd log") from None


def close_jumps(jumps: list[Connection]) -> None:
    """Close the jump hosts, last hop first; best effort."""
    for jump in reversed(jumps):
        try:
            jump.close()
        except Exception:  # noqa: BLE001 - best effort, as Remote.close
            pass


def drop(*connections) -> None:
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
