"""Benchmarks of the operator's view (issue 14), on the 8-host lab, holding the lab lock:

1. `status --watch` refresh with held connections vs the physical limit: one already-open SSH
   channel per host (`ssh HOST bash`, kept open) running the same reads (the host-state read and,
   on the app host, the same Redis commands with redis-cli), all hosts in parallel; interleaved
   rounds at 2 and 8 hosts, median of per-round ratios.
2. The watcher's own CPU: `invoke status --watch --interval 2` with 8 hosts on a pseudo-terminal,
   utime+stime of its process over a 24 s window after start-up.
3. `logs -f` with 8 hosts each writing 1,000 lines/s for 10 s: every line delivered, in order per
   service, and the client's CPU over the window.

    .venv/bin/python bench/operator_view.py [--rounds N]

Writes bench/results/operator-view.json and prints a table. Leaves the default 2-host lab running.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as benchrun  # noqa: E402  (bench/run.py: lab helpers, lock, inventories)

from comfyume_fab.lab import hostsvc, manager  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


# --- 1. refresh vs an open channel ------------------------------------------------------------

class OpenChannel:
    """`ssh HOST bash` kept open; `round(script)` runs the script in it and waits for its end."""

    def __init__(self, name: str):
        self.proc = subprocess.Popen(["ssh", "-F", str(manager.LAB_DIR / "ssh_config"), "-T", name, "bash"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def round(self, script: str) -> None:
        self.proc.stdin.write(f"cd; {{ {script}\n}} >/dev/null 2>&1; echo @@END\n".encode())
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line or line.startswith(b"@@END"):
                return

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(5)


def floor_scripts(inv_path: Path) -> dict[str, str]:
    """Per host: the watcher's own host-state command line, plus on the app host the Redis commands
    it sends (TIME, ZCARD x2, TTL per worker, ZCOUNT of the last minute) through redis-cli."""
    from comfyume_fab.host import state as hoststate
    from comfyume_fab.host.ssh.remote import Result
    from comfyume_fab.inventory.read import load_inventory
    from comfyume_fab.plan.planner import make_plan
    inv = load_inventory(str(inv_path))
    plan = make_plan(inv)

    class Capture:
        name = "capture"
        command = ""

        def run(self, command, timeout=None, step=None):
            Capture.command = command
            return Result(command, "", "", 0, 0.0)
    out = {}
    workers = [hp.host.worker_id for hp in plan.hosts if hp.worker_services]
    for hp in plan.hosts:
        hoststate.read(Capture(), inv.project, hp.host.workdir, preflight=("engine", "nvidia"))
        script = Capture.command
        if hp is plan.app:
            cmds = "TIME\nZCARD queue:pending\nZCARD queue:running\n" + "".join(
                f"TTL worker:{w}:heartbeat\n" for w in workers)
            script += ("; cd comfyume && export REDISCLI_AUTH=\"$(sed -n \"s/^REDIS_PASSWORD='\\(.*\\)'$/\\1/p\" .env)\""
                       f" && {{ printf '{cmds}'; echo \"ZCOUNT queue:completed $(( $(date +%s) - 60 )) +inf\"; }}"
                       f" | redis-cli --no-auth-warning -h {hp.env.get('REDIS_BIND_IP', '127.0.0.1')} "
                       f"-p {inv.ports.redis}; cd")
        out[hp.name] = script
    return out


def parallel(fns) -> float:
    t0 = time.monotonic()
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def bench_refresh(inv_path: Path, rounds: int) -> dict:
    from comfyume_fab.inventory.read import load_inventory
    from comfyume_fab.ops.watch import Watch
    inv = load_inventory(str(inv_path))
    w = Watch(inv, interval=2.0, probe_every=0)
    for hw in w.watchers:
        hw._connect()
    scripts = floor_scripts(inv_path)
    chans = {name: OpenChannel(name) for name in scripts}
    tool = lambda: parallel([hw._read for hw in w.watchers])  # noqa: E731
    floor = lambda: parallel([lambda n=n: chans[n].round(scripts[n]) for n in chans])  # noqa: E731
    for _ in range(2):  # warm-up: tunnels, caches
        tool(), floor()
    samples = []
    for r in range(rounds):
        if r % 2:
            f, t = floor(), tool()
        else:
            t, f = tool(), floor()
        samples.append((t, f))
    for c in chans.values():
        c.close()
    for hw in w.watchers:
        hw.remote.close()
        hw._close_redis()
    ratios = [t / f for t, f in samples]
    return {"hosts": len(scripts), "tool_s": statistics.median(t for t, _ in samples),
            "floor_s": statistics.median(f for _, f in samples), "ratio": statistics.median(ratios),
            "samples": samples}


# --- 2. watcher CPU ------------------------------------------------------------------------------

def bench_watch_cpu(inv_path: Path, warm: float = 8, window: float = 24) -> dict:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen([benchrun.INVOKE, "status", "--watch", "--interval", "2", "--probe-every", "30",
                             "--hosts", str(inv_path)], cwd=str(benchrun.REPO), stdin=slave, stdout=slave,
                            stderr=slave, env=dict(os.environ, TERM="xterm"), start_new_session=True)
    os.close(slave)
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return
    threading.Thread(target=drain, daemon=True).start()
    time.sleep(warm)
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    time.sleep(window)
    c1, t1 = cpu_s(proc.pid), time.monotonic()
    os.write(master, b"q")
    rc = proc.wait(15)
    stop.set()
    os.close(master)
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "window_s": t1 - t0, "exit": rc}


# --- 3. logs -f throughput -------------------------------------------------------------------------

GEN = ("for s in $(seq 0 {batches_1}); do seq -f 'gen {host} %.0f' $((s*100)) $((s*100+99)); sleep 0.1; "
       "done > /proc/1/fd/1")


def service_container(h, service: str) -> str:
    return hostsvc.docker(h, "ps", "-q", "--filter", "label=com.docker.compose.project=comfyume", "--filter",
                          f"label=com.docker.compose.service={service}").stdout.split()[0]


def bench_logs(inv_path: Path, seconds: int = 10) -> dict:
    hosts = manager.load_state()
    proc = subprocess.Popen([benchrun.INVOKE, "logs", "-f", "--tail", "0", "--hosts", str(inv_path)],
                            cwd=str(benchrun.REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, NO_COLOR="1"))
    seen: dict[str, list[int]] = {h.name: [] for h in hosts}
    pat = re.compile(rb"^(\S+)/\S+ gen (\S+) (\d+)$")

    def read():
        for line in proc.stdout:
            m = pat.match(line.rstrip(b"\n"))
            if m:
                seen[m[2].decode()].append(int(m[3]))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(6)  # every host's stream is up
    n = seconds * 10
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    for h in hosts:
        svc = "redis" if h.role == "app" else "worker"
        hostsvc.docker(h, "exec", "-d", service_container(h, svc), "sh", "-c",
                       GEN.format(batches_1=n - 1, host=h.name))
    time.sleep(seconds + 3)
    expected = n * 100
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(len(v) < expected for v in seen.values()):
        time.sleep(0.5)
    c1, t1 = cpu_s(proc.pid), time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(15)
    per_host = {h: {"received": len(v), "in_order": v == sorted(v), "complete": v == list(range(expected))}
                for h, v in seen.items()}
    return {"hosts": len(hosts), "lines_per_host": expected, "rate_per_host": 1000, "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "window_s": t1 - t0, "exit": rc, "per_host": per_host,
            "all_delivered_in_order": all(p["complete"] for p in per_host.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved refresh rounds per host count")
    ns = ap.parse_args()
    out: dict = {}
    benchrun.LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(benchrun.LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[manager.LOCK_HELD_ENV] = "1"
        benchrun.say("holding the lab lock")
        try:
            hosts = benchrun.ensure_lab(workers=7)
            names = [h.name for h in hosts]
            invs = {n: benchrun.inventory_for(names[:n], f"ov-{n}") for n in (2, 8)}
            benchrun.say("start-all on 8 hosts")
            out["deploy_8_s"] = benchrun.must("start-all (8 hosts)", benchrun.tool("start-all", "--hosts", str(invs[8])))
            for n in (2, 8):
                benchrun.say(f"refresh: {n} hosts, {ns.rounds} rounds")
                out[f"refresh_{n}"] = bench_refresh(invs[n], ns.rounds)
            benchrun.say("watcher CPU, 8 hosts, interval 2 s")
            out["watch_cpu_8"] = bench_watch_cpu(invs[8])
            benchrun.say("logs -f, 8 hosts x 1000 lines/s")
            out["logs_8"] = bench_logs(invs[8])
        finally:
            benchrun.restore_default_lab()
    benchrun.RESULTS.mkdir(exist_ok=True)
    (benchrun.RESULTS / "operator-view.json").write_text(json.dumps(out, indent=1))
    r2, r8, cpu, lg = out["refresh_2"], out["refresh_8"], out["watch_cpu_8"], out["logs_8"]
    print("| target | measured | met |\n|---|---|---|")
    print(f"| watch refresh, 2 hosts: <= 1.2x an open channel | {r2['ratio']:.2f}x ({r2['tool_s']*1000:.0f} vs "
          f"{r2['floor_s']*1000:.0f} ms) | {'yes' if r2['ratio'] <= 1.2 else 'no'} |")
    print(f"| watch refresh, 8 hosts: <= 1.2x an open channel | {r8['ratio']:.2f}x ({r8['tool_s']*1000:.0f} vs "
          f"{r8['floor_s']*1000:.0f} ms) | {'yes' if r8['ratio'] <= 1.2 else 'no'} |")
    print(f"| watcher CPU, 8 hosts, 2 s interval: <= 5 % of a core | {cpu['cpu_pct']:.1f} % | "
          f"{'yes' if cpu['cpu_pct'] <= 5 else 'no'} |")
    print(f"| logs -f, 8 hosts x 1,000 lines/s: every line, in order; client < 25 % of a core | "
          f"{'all' if lg['all_delivered_in_order'] else 'NOT all'} delivered in order, {lg['cpu_pct']:.1f} % | "
          f"{'yes' if lg['all_delivered_in_order'] and lg['cpu_pct'] < 25 else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
