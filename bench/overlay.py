"""Overlay or host mode: a 50 MB transfer between two lab hosts in one Swarm, three ways.

    flock /run/comfyume-lab.lock .venv/bin/python bench/overlay.py [--rounds 7] [--stall-limit 30]

Run as root, with the lab up, holding the lab's lock (the command above). It adds two dedicated lab
hosts (comfyume_fab/lab/dynhost.py; the shared mello/verda engines are never touched), makes a Swarm
of them with their tailnet addresses as advertise and data-path addresses (the join token goes
over the Engine API's socket, never into an argv or the output), and times one client container on
the manager host sending 50,000,000 bytes to a server container on the worker host:

  (a) over an attachable overlay network with driver MTU 1280 (containers get 1230, so their VXLAN
      packets, 50 bytes more, fit the tailnet's 1280),
  (b) over an attachable overlay with the default MTU (1450: each full-size packet is 1500 bytes
      once encapsulated, more than the tailnet link's 1280), time-limited (`--stall-limit`),
  (c) to a Swarm service's port published in host mode, reached at the worker's tailnet address
      (the path the stack gives Redis and the queue manager): the baseline.

The client times itself, from connect to the server's acknowledgement of every byte (a `docker
exec`'s own start-up is not in the figure). A warm-up round, then N rounds in which the variants
alternate (a b c, then b c a, ...); ratios are medians of per-round ratios against (c), never
across invocations. It writes bench/results/overlay-latest.{md,json} and, with --write-results,
bench/RESULTS-overlay.md. The two hosts are removed at the end, also when something fails.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))


def _lab_dir() -> None:
    """Use the LAB_DIR of the checkout that made the running lab (its state.json lists the hosts)."""
    if "COMFYUME_LAB_DIR" not in os.environ:
        try:
            os.environ["COMFYUME_LAB_DIR"] = Path("/run/comfyume-lab.owner").read_text().strip()
        except OSError:
            pass


_lab_dir()

from comfyume_fab.lab import dynhost, hostsvc  # noqa: E402
from comfyume_fab.lab.system import LabError, read_pid  # noqa: E402

RESULTS = BENCH / "results"
HOSTS = ("ovlbench-a", "ovlbench-b")  # a: manager + clients, b: worker + servers
IMAGE = "comfyume-worker:v0.11.0"  # loaded on every lab engine (built on the lab base: python3); run with our own command; no pull
PORT = 5201
SIZE = 50_000_000
# An overlay's `com.docker.network.driver.mtu` is the UNDERLAY's: libnetwork's overlay driver gives
# its VXLAN interface (and so the containers) that minus 50 (maxMTU: mtu -= vxlanEncap). So 1280 is
# what fits the tailnet: containers get 1230, and their VXLAN packets are exactly 1280.
FIT_DRIVER_MTU = 1280
VARIANTS = {
    "a": f"overlay, driver MTU {FIT_DRIVER_MTU} (containers 1230: VXLAN packets fit the tailnet)",
    "b": "overlay, default MTU (containers 1450: VXLAN packets 1500)",
    "c": "host-mode published port on the tailnet address",
}

SERVER = r"""
import socket, sys, threading
def serve(c):
    try:
        c.settimeout(600)
        head = b""
        while len(head) < 8:
            d = c.recv(8 - len(head))
            if not d:
                return
            head += d
        size, got = int.from_bytes(head, "big"), 0
        while got < size:
            d = c.recv(1 << 20)
            if not d:
                break
            got += len(d)
        c.sendall(b"OK %d\n" % got)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, socket, sys, time
host, port, size, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
buf = memoryview(b"\0" * 262144)
t0 = time.perf_counter()
sent, error, got, first_stall = 0, "", -1, None
def left():
    spent = time.perf_counter() - t0
    if spent > limit:
        raise TimeoutError(f"not done within {limit:g} s")
    return spent
try:
    s = socket.create_connection((host, port), timeout=min(limit, 10))
    s.settimeout(1.0)
    s.sendall(size.to_bytes(8, "big"))
    while sent < size:
        left()
        try:
            sent += s.send(buf[: min(len(buf), size - sent)])
        except socket.timeout:
            first_stall = first_stall if first_stall is not None else sent
    reply = b""
    while not reply.endswith(b"\n"):
        left()
        try:
            d = s.recv(64)
        except socket.timeout:
            continue
        if not d:
            raise ConnectionError("the server closed the connection before acknowledging")
        reply += d
    got = int(reply.split()[1])
    if got != size:
        error = f"the server received {got} of {size} bytes"
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"ok": not error, "elapsed": time.perf_counter() - t0, "sent": sent, "acked": got,
                  "first_stall_at": first_stall, "error": error}))
"""


def say(msg: str) -> None:
    print(f"[overlay {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def docker(host, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return hostsvc.docker(host, *args, check=check, timeout=timeout)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def engine_api(host, method: str, path: str, body: dict | None = None, timeout: float = 60):
    """One Engine API call over the host's socket (the join token goes here, never into an argv)."""
    conn = _UnixHTTP(str(host.docker_sock), timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read().decode()
    finally:
        conn.close()
    if resp.status >= 300:
        raise LabError(f"Engine API {method} {path} on {host.name}: HTTP {resp.status}: {data[:300]}")
    return json.loads(data) if data.strip() else None


def dockerd_env_has(host, name: str, value: str) -> bool:
    pid = read_pid(host.dockerd_pid)
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if pid else []
    return f"{name}={value}".encode() in env


def link_mtu(host) -> int:
    """The host's tailnet link (its eth0), read with `ip -n` (a plain nsenter --net keeps the
    machine's own /sys, whose eth0 is another interface)."""
    out = subprocess.run(["ip", "-o", "-n", host.netns, "link", "show", "eth0"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split(" mtu ", 1)[1].split()[0])


def ip_counters(host) -> dict[str, int]:
    """The host namespace's IP counters (/proc/net/snmp, per network namespace): FragCreates counts
    the fragments made of packets larger than the link (an overlay's VXLAN packets, here)."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, check=True).stdout
    head, values = [line.split()[1:] for line in out.splitlines() if line.startswith("Ip:")][:2]
    return dict(zip(head, map(int, values)))


def container_mtu(host, name: str) -> int:
    return int(docker(host, "exec", name, "cat", "/sys/class/net/eth0/mtu").stdout)


def container_ip(host, name: str, network: str) -> str:
    fmt = "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % network
    return docker(host, "inspect", "--format", fmt, name).stdout.strip()


def set_up(a, b) -> dict:
    """Swarm of a (manager) and b (worker) on their tailnet addresses; the two overlays; servers on
    b; clients on a. Returns where each client sends to."""
    assert dockerd_env_has(a, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1"), "lab engines must not pull"
    docker(a, "swarm", "init", "--advertise-addr", a.address, "--data-path-addr", a.address,
           "--listen-addr", f"{a.address}:2377")
    token = engine_api(a, "GET", "/swarm")["JoinTokens"]["Worker"]
    engine_api(b, "POST", "/swarm/join", {"ListenAddr": f"{b.address}:2377", "AdvertiseAddr": b.address,
                                          "DataPathAddr": b.address, "RemoteAddrs": [f"{a.address}:2377"],
                                          "JoinToken": token})
    del token
    b_id = engine_api(b, "GET", "/info")["Swarm"]["NodeID"]
    nets = {"a": "ovlbench-fit", "b": "ovlbench-default"}
    docker(a, "network", "create", "--driver", "overlay", "--attachable",
           "--opt", f"com.docker.network.driver.mtu={FIT_DRIVER_MTU}", nets["a"])
    docker(a, "network", "create", "--driver", "overlay", "--attachable", nets["b"])
    targets = {}
    for key, net in nets.items():
        docker(b, "run", "-d", "--name", f"srv-{key}", "--network", net, IMAGE, "python3", "-c", SERVER, str(PORT))
        docker(a, "run", "-d", "--name", f"cli-{key}", "--network", net, IMAGE, "sleep", "infinity")
        targets[key] = container_ip(b, f"srv-{key}", net)
    # (c): a Swarm service on b with its port published in host mode, reached at b's tailnet address
    docker(a, "service", "create", "--detach", "--name", "ovlbench-host", "--constraint", f"node.id=={b_id}",
           "--publish", f"mode=host,target={PORT},published={PORT}", "--restart-condition", "none",
           IMAGE, "python3", "-c", SERVER, str(PORT))
    docker(a, "run", "-d", "--name", "cli-c", IMAGE, "sleep", "infinity")
    targets["c"] = b.address
    deadline = time.monotonic() + 60
    while True:
        state = docker(a, "service", "ps", "--format", "{{.CurrentState}} {{.Error}}", "ovlbench-host").stdout
        if state.startswith("Running"):
            break
        if time.monotonic() > deadline:
            raise LabError(f"the host-mode service did not start within 60 s: {state.strip()}")
        time.sleep(0.5)
    mtus = {"tailnet link (host eth0)": link_mtu(a)}
    for key in ("a", "b"):
        mtus[f"{VARIANTS[key]}: container eth0"] = container_mtu(a, f"cli-{key}")
    return {"targets": targets, "mtus": mtus, "node_b": b_id}


def link_tx(host) -> tuple[int, int]:
    """(bytes, packets) the host has sent on its tailnet link (L2 bytes: 14 more than IP per packet)."""
    out = subprocess.run(["ip", "-j", "-s", "-n", host.netns, "link", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    tx = json.loads(out)[0]["stats64"]["tx"]
    return tx["bytes"], tx["packets"]


OFFLOADS = ("tso", "gso", "gro", "tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "tx-gso-partial")
CONFIGS = {
    "wire": "segmentation offloads off on both tailnet links: every packet on a link is at most its MTU, as on a "
            "real tunnel (WireGuard sends no packet over 1280)",
    "gso": "the links as the lab makes them (offloads on): the kernel hands ~60 KB GSO packets to the veth pair, "
           "so the 1280 MTU never applies to bulk transfers",
}


def set_offloads(hosts, on: bool) -> None:
    """Segmentation/receive offloads of both ends of each host's tailnet link (ethtool -K)."""
    state = "on" if on else "off"
    for host in hosts:
        for dev, prefix in (("eth0", ["ip", "netns", "exec", host.netns]), (host.veth, [])):
            for feature in OFFLOADS:  # one at a time: a feature a device lacks must not stop the others
                subprocess.run(prefix + ["ethtool", "-K", dev, feature, state], capture_output=True, text=True)


def route_mtu(a, key: str, target: str) -> int | None:
    """The path MTU the client container's kernel holds for the server now (a PMTU exception
    learnt from an ICMP "fragmentation needed"), or None when it holds none."""
    pid = docker(a, "inspect", "--format", "{{.State.Pid}}", f"cli-{key}").stdout.strip()
    out = subprocess.run(["nsenter", "-t", pid, "-n", "ip", "route", "get", target], capture_output=True,
                         text=True).stdout
    words = out.split()
    return int(words[words.index("mtu") + 1]) if "mtu" in words else None


def transfer(a, key: str, target: str, limit: float) -> dict:
    before, tx0 = ip_counters(a), link_tx(a)
    t0 = time.perf_counter()
    proc = docker(a, "exec", f"cli-{key}", "python3", "-c", CLIENT, target, str(PORT), str(SIZE), str(limit),
                  check=False, timeout=limit + 30)
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        res = {"ok": False, "elapsed": None, "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"}
    res["exec_wall_s"] = time.perf_counter() - t0
    after, tx1 = ip_counters(a), link_tx(a)
    res["frag_creates"] = after["FragCreates"] - before["FragCreates"]  # on the sending host
    res["frag_fails"] = after["FragFails"] - before["FragFails"]  # too big with DF set: ICMP sent back
    res["link_tx_bytes"], res["link_tx_packets"] = tx1[0] - tx0[0], tx1[1] - tx0[1]
    return res


def tear_down(a, b) -> None:
    for host in (b, a):
        if host is not None:
            docker(host, "swarm", "leave", "--force", check=False, timeout=60)
    for name in HOSTS:
        try:
            dynhost.remove_host(name)
        except Exception as exc:  # keep removing the other one
            say(f"removing {name}: {exc}")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(samples: list[dict]) -> dict:
    """Per variant: runs, successes, median/min/max seconds, MB/s, failures, what crossed the link;
    per overlay variant: the median (min, max) of its per-round ratios against (c)."""
    out = {}
    for key in VARIANTS:
        mine = [s for s in samples if s["variant"] == key]
        ok = [s["elapsed"] for s in mine if s["ok"]]
        out[key] = {"n": len(mine), "ok": len(ok), "median_s": _median(ok),
                    "min_s": min(ok) if ok else None, "max_s": max(ok) if ok else None,
                    "mb_per_s": SIZE / 1e6 / statistics.median(ok) if ok else None,
                    "failures": [s["error"] for s in mine if not s["ok"]],
                    "sent_at_failure": [s.get("sent") for s in mine if not s["ok"]],
                    "frag_creates_median": _median([s.get("frag_creates") for s in mine]),
                    "frag_fails_median": _median([s.get("frag_fails") for s in mine]),
                    "link_bytes_per_packet": _median([s["link_tx_bytes"] / s["link_tx_packets"] - 14 for s in mine
                                                      if s.get("link_tx_packets")]),
                    "route_mtu_after": sorted({s.get("route_mtu") for s in mine}, key=str)}
    ratios = {}
    base = {s["round"]: s["elapsed"] for s in samples if s["variant"] == "c" and s["ok"]}
    for key in ("a", "b"):
        per = [s["elapsed"] / base[s["round"]] for s in samples
               if s["variant"] == key and s["ok"] and s["round"] in base]
        ratios[key] = {"n": len(per), "median": _median(per), "min": min(per) if per else None,
                       "max": max(per) if per else None}
    return {"variants": out, "ratios": ratios}


def fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def report(meta: dict, summaries: dict) -> str:
    lines = [f"Measured {meta['when']} on {meta['machine']}, revision {meta['revision']}; two dedicated lab "
             f"hosts ({', '.join(HOSTS)}) in one Swarm, Docker {meta['docker']}, tailnet link MTU "
             f"{meta['mtus']['tailnet link (host eth0)']}; per configuration {meta['rounds']} interleaved rounds "
             f"after a warm-up round; {SIZE:,} bytes per transfer, timed by the client from connect to the "
             f"server's acknowledgement; time limit {meta['stall_limit']:g} s per transfer.",
             "", "MTUs seen: " + "; ".join(f"{k} {v}" for k, v in meta["mtus"].items()) + "."]
    for cfg, summary in summaries.items():
        lines += ["", f"### Links: {CONFIGS[cfg]}", "",
                  "| variant | ok / runs | median s | min–max s | MB/s | IP bytes per packet on the link | "
                  "fragments made / too-big drops per transfer | client's path MTU after |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, label in VARIANTS.items():
            v = summary["variants"][key]
            lines.append(f"| ({key}) {label} | {v['ok']}/{v['n']} | {fmt(v['median_s'])} | "
                         f"{fmt(v['min_s'])}–{fmt(v['max_s'])} | {fmt(v['mb_per_s'], '.0f')} | "
                         f"{fmt(v['link_bytes_per_packet'], '.0f')} | {fmt(v['frag_creates_median'], '.0f')} / "
                         f"{fmt(v['frag_fails_median'], '.0f')} | "
                         f"{', '.join('none cached' if m is None else str(m) for m in v['route_mtu_after'])} |")
        lines += ["", "| ratio (median of per-round ratios) | n | median | min–max |", "|---|---|---|---|"]
        for key in ("a", "b"):
            r = summary["ratios"][key]
            lines.append(f"| ({key}) / (c) | {r['n']} | {fmt(r['median'], '.2f')}x | "
                         f"{fmt(r['min'], '.2f')}–{fmt(r['max'], '.2f')} |")
        for key, v in summary["variants"].items():
            if v["failures"]:
                lines.append(f"\n({key}) failed {len(v['failures'])} of {v['n']} times: "
                             + "; ".join(sorted(set(v["failures"])))
                             + f" (bytes handed to the socket by then: {v['sent_at_failure']}).")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--stall-limit", type=float, default=30.0, help="seconds a transfer may take")
    ap.add_argument("--write-results", action="store_true", help="also write bench/RESULTS-overlay.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/overlay.py needs root (it adds lab hosts); run it as root.", file=sys.stderr)
        return 2
    if not shutil.which("ethtool"):  # without it the "offloads off" rows would silently be offloads on
        print("bench/overlay.py needs ethtool (to turn the links' offloads off): apt-get install ethtool", file=sys.stderr)
        return 2
    for name in HOSTS:
        if dynhost.find(name):
            say(f"{name} is left over from an earlier run: removing it")
            dynhost.remove_host(name)
    a = b = None
    samples: list[dict] = []
    try:
        say("adding two lab hosts")
        a = dynhost.add_host(HOSTS[0], "app", start_ssh=False, say=say)
        b = dynhost.add_host(HOSTS[1], "worker", start_ssh=False, say=say)
        say(f"swarm on {a.address} (manager) and {b.address} (worker); networks and containers")
        setup = set_up(a, b)
        say(f"MTUs: {setup['mtus']}")
        order = list(VARIANTS)
        for cfg in CONFIGS:
            set_offloads((a, b), on=(cfg == "gso"))
            for rnd in range(args.rounds + 1):
                for key in order[rnd % 3:] + order[:rnd % 3]:
                    res = transfer(a, key, setup["targets"][key], args.stall_limit)
                    res["route_mtu"] = route_mtu(a, key, setup["targets"][key])
                    say(f"{cfg} round {rnd or 'warm-up'} ({key}): {'ok' if res['ok'] else 'FAILED'} "
                        f"{fmt(res.get('elapsed'))} s, {res.get('link_tx_packets')} packets {res.get('error') or ''}")
                    if rnd:
                        samples.append(dict(res, variant=key, round=rnd, config=cfg))
        meta = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}",
                "revision": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True).stdout.strip(),
                "docker": docker(a, "version", "--format", "{{.Server.Version}}").stdout.strip(),
                "rounds": args.rounds, "stall_limit": args.stall_limit, "mtus": setup["mtus"]}
    finally:
        say("removing the two lab hosts")
        tear_down(a, b)
    summaries = {cfg: summarise([s for s in samples if s["config"] == cfg]) for cfg in CONFIGS}
    text = report(meta, summaries)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overlay-latest.md").write_text(text)
    (RESULTS / "overlay-latest.json").write_text(json.dumps({"meta": meta, "summaries": summaries,
                                                             "samples": samples}, indent=1))
    if args.write_results:
        (BENCH / "RESULTS-overlay.md").write_text("# Overlay or host mode: 50 MB between two lab hosts\n\n"
                                                  "Made by `bench/overlay.py` (see its docstring).\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
