"""The per-user helper: a warm process that runs one-shot tasks for `invoke`/`comfyume-fab`.

`python -m comfyume_fab.helper SOCKET` (started by comfyume_fab.handoff, never by hand) imports
everything a task needs once, then waits on SOCKET. For each task it forks: the fork takes the
caller's stdin/stdout/stderr, folder, environment, umask and command line and runs the command
line as the caller would have; the helper reports its exit status and passes on the caller's
signals. It never keeps SSH connections or secrets between tasks: each fork reads the inventory
and connects (host keys checked) like a fresh process. See comfyume_fab.handoff for the rules
(socket folder and mode, uid checks, idle expiry, stale code).
"""
from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import sys
import time

from . import handoff

def preload() -> None:
    """Import what the one-shot tasks use (the watch screen's rich and the lab stay out)."""
    import pkgutil

    import comfyume_fab
    import invoke.main  # noqa: F401
    import redis  # noqa: F401
    import yaml  # noqa: F401

    from . import cli  # noqa: F401  (Fabric, paramiko, the tasks)
    skip = {"comfyume_fab.lab", "comfyume_fab.helper", "comfyume_fab.ops.watch"}

    def walk(path, prefix):  # not pkgutil.walk_packages: it imports every package, the lab's too
        for info in pkgutil.iter_modules(path, prefix):
            if info.name not in skip:
                module = __import__(info.name, fromlist=["_"])
                if info.ispkg:
                    walk(module.__path__, info.name + ".")
    walk(comfyume_fab.__path__, "comfyume_fab.")


def module_files() -> dict[str, tuple]:
    """Every loaded module's file and what it looked like when loaded (to notice an upgrade)."""
    out = {}
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if path and path not in out:
            out[path] = _identity(path)
    return out


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def stale(files: dict[str, tuple]) -> bool:
    return any(_identity(path) != ident for path, ident in files.items())


class Helper:
    def __init__(self, path: str, idle_s: float):
        self.path = path
        self.idle_s = idle_s
        self.started = time.time()
        self.last = self.started  # when it last ran a task
        self.served = 0
        self.files: dict[str, tuple] = {}
        self.lock_fd = -1
        self.sock: socket.socket | None = None
        self.ino = None

    def claim(self) -> bool:
        """Hold the installation's lock and publish the socket; False when another helper runs."""
        self.lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        tmp = f"{self.path}.{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        sock.listen(16)
        os.rename(tmp, self.path)
        self.ino = os.stat(self.path).st_ino
        self.sock = sock
        return True

    def release(self) -> None:
        """Take the socket down (only if it is still ours) and let the next helper in."""
        try:
            if self.ino is not None and os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.ino = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-task forks reap themselves
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while self.sock is not None:
            left = self.last + self.idle_s - time.time()  # idle: since the last task (a question does not count)
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            with conn:
                if not self.answer(conn):
                    return

    def answer(self, conn: socket.socket) -> bool:
        """Serve one connection; False when the helper should end."""
        conn.settimeout(5)
        try:
            if handoff.peer_uid(conn) != os.getuid():
                return True
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        except OSError:
            return True
        lines = handoff.Lines(conn, data)
        try:
            try:
                message = lines.next()
            except (OSError, ValueError):
                return True
            if not message:
                return True
            op = message.get("op")
            if op == "info":
                handoff.send(conn, {"pid": os.getpid(), "socket": self.path, "started": self.started,
                                    "idle_s": self.idle_s, "served": self.served, "modules": len(self.files),
                                    "last": self.last})
                return True
            if op == "stop":
                self.release()
                handoff.send(conn, {"stopped": os.getpid()})
                return False
            if op != "run" or len(fds) != 3:
                handoff.send(conn, {"refused": "bad request"})
                return True
            if stale(self.files):  # an upgrade or an edit: never run old code
                self.release()
                handoff.send(conn, {"refused": "stale"})
                return False
            self.served += 1
            self.last = time.time()
            if os.fork() == 0:
                code = 1
                try:
                    self.sock.close()
                    code = relay(conn, lines, message, fds)
                finally:
                    os._exit(code)
            return True
        except OSError:
            return True
        finally:
            for fd in fds:
                os.close(fd)


def relay(conn: socket.socket, lines: handoff.Lines, message: dict, fds: list[int]) -> int:
    """In the fork that owns one task: start the task's process, pass signals on, report its end."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    conn.settimeout(None)
    pid = os.fork()
    if pid == 0:
        conn.close()
        run(message, fds)  # never returns
    for fd in fds:  # the task's process has them now (a pipe's reader must see it end with it)
        os.close(fd)
    fds.clear()
    pidfd = os.pidfd_open(pid)
    handoff.send(conn, {"pid": pid})
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ)
    caller = True
    sel.register(conn, selectors.EVENT_READ)
    pending = lines.buf
    while True:
        while pending and b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            _signal_from(line, pidfd)
        for key, _ in sel.select():
            if key.fileobj == pidfd:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                reply = {"exit": code} if code >= 0 else {"exit": 128 - code, "signal": -code}
                try:
                    handoff.send(conn, reply)
                except OSError:
                    pass
                return 0
            if caller:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if data:
                    pending += data
                    continue
                # the command that handed the task over is gone: stop the task as Ctrl-C would
                # (and wake it, should it be stopped: a stopped process acts on no signal)
                caller = False
                sel.unregister(conn)
                _send_signal(pidfd, signal.SIGINT)
                _send_signal(pidfd, signal.SIGCONT)


def _signal_from(line: bytes, pidfd: int) -> None:
    import json
    try:
        sig = int(json.loads(line).get("signal"))
    except (ValueError, TypeError, AttributeError):
        return
    if 0 < sig < signal.NSIG:
        _send_signal(pidfd, sig)


def _send_signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass


def run(message: dict, fds: list[int]) -> None:
    """In the task's own process: become the caller, run its command line, exit with its status."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.setsid()
        os.environ.clear()
        os.environ.update(message["env"])
        os.umask(int(message["umask"]))
        sys.argv = list(message["argv"])
        sys.path[:] = list(message["path"])
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGTSTP, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        for stream, (encoding, errors) in zip((sys.stdin, sys.stdout, sys.stderr), message["encodings"]):
            try:
                stream.reconfigure(encoding=encoding or None, errors=errors or None,
                                   line_buffering=stream is sys.stderr or os.isatty(stream.fileno()),
                                   **({} if stream is sys.stdin else {"write_through": unbuffered or stream is sys.stderr}))
            except (AttributeError, OSError, ValueError, LookupError):
                pass
        handoff.IN_HELPER = True
        try:
            os.chdir(message["cwd"])
        except OSError as exc:
            print(f"error: cannot enter the folder {message['cwd']!r}: {exc.strerror}", file=sys.stderr)
            code = 1
            return
        code = _run_program(message["program"])
    finally:
        code = _finish(code)
        os._exit(code)


def _run_program(program: str) -> int:
    try:
        if program == "comfyume-fab":
            from .cli import main
            main()
        else:
            from invoke.main import program as invoke_program
            invoke_program.run()
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # what the interpreter would print for an uncaught exception
        import traceback
        traceback.print_exc()
        return 1


def _finish(code: int) -> int:
    """What the interpreter does on the way out: wait for threads, run atexit, flush."""
    import atexit
    import threading
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 120  # as the interpreter does when stdout cannot be flushed at exit
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].endswith(".sock"):
        print("usage: python -m comfyume_fab.helper SOCKET (started by comfyume-fab itself)", file=sys.stderr)
        return 2
    path = argv[1]
    folder = os.path.dirname(path)
    if handoff.private_dir(create=False) != folder:
        return 2  # not the user's own private folder: never listen there
    preload()
    import gc
    gc.collect()
    gc.freeze()  # the forks share these pages instead of copying them on their first collection
    helper = Helper(path, handoff.idle_seconds())
    helper.files = module_files()
    os.chdir("/")
    if not helper.claim():
        return 0
    try:
        helper.serve()
    finally:
        helper.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
