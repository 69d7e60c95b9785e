"""Hand a one-shot task to the per-user helper (comfyume_fab.helper), so that it starts warm.

Most of a one-shot `status` is Python start-up: importing Invoke, Fabric with paramiko and
cryptography, and redis-py costs more CPU than the task itself. The helper is a background
process that has them imported already; for each task it forks a process that takes over this
process's stdin, stdout and stderr (passed over the socket, so colour, tty checks and pipes
behave as here), working folder, environment, umask and command line, and runs the same
command line. Everything else is the normal run: the inventory is read, secrets are resolved and
every SSH connection is opened (host keys checked) anew. Signals this process gets (Ctrl-C,
kill, hang-up, resize, Ctrl-Z) are passed on, and its exit status is the task's.

Like OpenSSH's ControlPersist: one helper per user and installation, behind a socket in a folder
only the user can enter (`$XDG_RUNTIME_DIR/comfyume-fab`, else `/tmp/comfyume-fab-UID`), mode
0600, the peer's uid checked on both sides; it exits after `$COMFYUME_FAB_HELPER_IDLE` seconds
without a task (default 600) and as soon as any module it has loaded changes on disk (an
upgrade, an edit), so it never runs stale code. The first run starts it (after its own work);
`COMFYUME_FAB_HELPER=0` turns it off; `invoke helper` shows it, `invoke helper --stop` ends it.
Only where Linux's pidfd is available; elsewhere every task runs in its own process as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import sys

ENV_SWITCH = "COMFYUME_FAB_HELPER"  # 0/no/off/false: never hand over, never start a helper
ENV_IDLE = "COMFYUME_FAB_HELPER_IDLE"  # seconds a helper waits for a task before it exits
DEFAULT_IDLE_S = 600.0
PROGRAMS = {"invoke": "invoke", "inv": "invoke", "comfyume-fab": "comfyume-fab"}
# Passed on to the task's process as they arrive; SIGTSTP (Ctrl-Z) stops both.
FORWARDED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH",
                                                 "SIGUSR1", "SIGUSR2", "SIGCONT") if hasattr(signal, n))
# The tasks a helper speeds up, with the options that make them long-running (those stay here).
ONE_SHOT = {"start-all": (), "stop-verda": (), "stop-all": (), "status": ("watch",), "plan": (), "diff": (),
            "rollback": (), "lock-break": ()}
IN_HELPER = False  # True in a process the helper forked to run a task: never hand over again
_asked = False  # this process asked a helper already (and runs the command itself)
_spawn_at_exit = False


def one_shot(task: str, options: set[str]) -> bool:
    """Whether `task` with these options (set, underscored) may run in the helper."""
    return task in ONE_SHOT and not options & set(ONE_SHOT[task])


def run_command(args: list[str]) -> int | None:
    """`comfyume-fab TASK ...` before Invoke is imported: run_task() when the words ask for a
    one-shot task (core options before the task name, or `--help`, are handled here)."""
    if not args or args[0] not in ONE_SHOT:
        return None
    words = args[1:args.index("--")] if "--" in args else args[1:]
    options = {w[2:].split("=", 1)[0].replace("-", "_") for w in words if w.startswith("--")}
    if options & {"help"} or "-h" in words or not one_shot(args[0], options):
        return None
    return run_task(args[0])


def enabled() -> bool:
    """Whether this process may hand over or start a helper."""
    if IN_HELPER or not hasattr(os, "pidfd_open") or not hasattr(socket, "SO_PEERCRED"):
        return False
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "off", "false")


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(ENV_IDLE, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def private_dir(create: bool = True) -> str | None:
    """The user's own folder for helper sockets, or None when it is not safe to use (not a
    folder, not ours, open to others)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    path = os.path.join(base, "comfyume-fab") if os.path.isabs(base) else f"/tmp/comfyume-fab-{os.getuid()}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def socket_path(folder: str) -> str:
    """One helper per installation: this Python environment and this copy of the package."""
    pkg = os.path.dirname(os.path.realpath(__file__))
    key = "\0".join((os.path.realpath(sys.executable), sys.prefix, pkg, sys.version))
    return os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:16] + ".sock")


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


class Lines:
    """Newline-framed JSON messages from a socket (several may arrive in one read)."""

    def __init__(self, conn: socket.socket, pending: bytes = b""):
        self.conn = conn
        self.buf = pending

    def next(self) -> dict | None:
        """The next message, or None at end of stream."""
        while b"\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def peer_uid(conn: socket.socket) -> int:
    import struct
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def connect(timeout: float | None = 2.0) -> socket.socket | None:
    """A connection to this installation's helper, checked to be the user's own, or None."""
    folder = private_dir(create=False)
    if folder is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(socket_path(folder))
        if peer_uid(conn) != os.getuid():
            raise OSError("helper socket served by another user")
        conn.settimeout(None)
        return conn
    except OSError:
        conn.close()
        return None


def request(message: dict, timeout: float = 5.0) -> dict | None:
    """One question to the helper (info, stop), its answer, or None when none runs."""
    conn = connect(timeout)
    if conn is None:
        return None
    try:
        conn.settimeout(timeout)
        send(conn, message)
        return Lines(conn).next()
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def describe(stop: bool = False) -> str:
    """`invoke helper [--stop]`: one line on this installation's helper."""
    if not hasattr(os, "pidfd_open") or not hasattr(socket, "SO_PEERCRED"):
        return "no helper on this system (it needs Linux's pidfd); every task runs in its own process"
    off = "" if enabled() else f" (and none will start: {ENV_SWITCH}={os.environ.get(ENV_SWITCH)})"
    info = request({"op": "info"})
    if info is None:
        return ("no helper runs for this installation" + off if off else
                "no helper runs for this installation; the next one-shot task starts one")
    if stop:
        done = request({"op": "stop"})
        return f"stopped the helper (pid {info['pid']})" if done else f"the helper (pid {info['pid']}) did not answer"
    import time
    idle = time.time() - info.get("last", info["started"])
    return (f"helper pid {info['pid']} at {info['socket']}: up {time.time() - info['started']:.0f} s, "
            f"{info['served']} task(s) run, idle {idle:.0f} s of {info['idle_s']:.0f} s{off}")


def program_name() -> str | None:
    return PROGRAMS.get(os.path.basename(sys.argv[0] if sys.argv else ""))


def run_task(task: str) -> int | None:
    """Run this process's command line in the helper; its exit status, or None when the helper
    did not take it (none running, refused, turned off): then the caller runs it here, and a
    helper is started when this process exits, for the next command."""
    global _asked
    program = program_name()
    if program is None or _asked or not enabled():
        return None
    _asked = True
    conn = connect()
    if conn is None:
        _start_later()
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    mask = os.umask(0o077)
    os.umask(mask)
    try:
        cwd = os.getcwd()
    except OSError:  # a folder removed under the shell: the command says so itself, here
        conn.close()
        return None
    message = {"op": "run", "program": program, "argv": list(sys.argv), "cwd": cwd, "env": dict(os.environ),
               "umask": mask, "path": list(sys.path),
               "encodings": [[getattr(s, "encoding", None), getattr(s, "errors", None)]
                             for s in (sys.stdin, sys.stdout, sys.stderr)]}
    relay = _SignalRelay(conn)
    try:
        try:
            socket.send_fds(conn, [json.dumps(message).encode() + b"\n"], [0, 1, 2])
            lines = Lines(conn)
            first = lines.next()
        except (OSError, ValueError):
            first = None
        if not first or "pid" not in first:
            if first and first.get("refused") == "stale":
                _start_later()
            relay.restore()
            try:
                relay.replay_here()
            except KeyboardInterrupt:
                print(f"\n{task}: interrupted before it started; nothing was done", file=sys.stderr)
                return 130
            return None
        relay.started()
        try:
            last = lines.next()
        except (OSError, ValueError):
            last = None
    finally:
        relay.restore()
        conn.close()
    if not last or "exit" not in last:
        print(f"error: {task}: the helper process running it ended without an exit status "
              f"(run again with {ENV_SWITCH}=0 to run without the helper)", file=sys.stderr)
        return 1
    if last.get("signal"):  # it was killed by a signal: end the same way, as the shell expects
        sig = int(last["signal"])
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
    return int(last["exit"])


class _SignalRelay:
    """While the task runs in the helper: signals to this process are sent on to it."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.pending: list[int] = []
        self.live = False
        self.old = {}
        for sig in FORWARDED + (signal.SIGTSTP,):
            try:
                self.old[sig] = signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass

    def _send(self, sig: int) -> None:
        try:
            send(self.conn, {"signal": int(sig)})
        except OSError:
            pass

    def _on_signal(self, sig, frame) -> None:
        if not self.live:
            self.pending.append(sig)
            return
        if sig == signal.SIGTSTP:  # Ctrl-Z: stop the task, then this process as usual
            self._send(signal.SIGSTOP)
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)  # stops here until `fg`/`bg` (SIGCONT) ...
            signal.signal(signal.SIGTSTP, self._on_signal)
            # ... or returns at once where the kernel discards it (an orphaned process group):
            # either way, the task goes on when this process does
            self._send(signal.SIGCONT)
            return
        self._send(sig)

    def started(self) -> None:
        self.live = True
        for sig in self.pending:
            self._on_signal(sig, None)
        self.pending = []

    def restore(self) -> None:
        for sig, old in self.old.items():
            try:
                signal.signal(sig, old)
            except (OSError, ValueError, TypeError):
                pass
        self.old = {}

    def replay_here(self) -> None:
        """Signals that came while the helper was being asked, for this process to act on."""
        for sig in self.pending:
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            if sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                os.kill(os.getpid(), sig)
        self.pending = []


def _start_later() -> None:
    """Start a helper when this process exits (after its own work, not competing with it)."""
    global _spawn_at_exit
    if _spawn_at_exit:
        return
    _spawn_at_exit = True
    import atexit
    atexit.register(spawn)


def spawn() -> None:
    """Start this installation's helper in the background (it gives up quietly if one runs)."""
    folder = private_dir(create=True)
    if folder is None:
        return
    import subprocess
    pkg_parent = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    try:
        subprocess.Popen([sys.executable, "-m", "comfyume_fab.helper", socket_path(folder)], cwd=pkg_parent,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass
