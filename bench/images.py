"""Benchmark rows for images built from the team's repository (issue 12), on the real lab:

    .venv/bin/python bench/images.py [--rounds N]

- no-op start-all WITH a build source (fetch + tree check on each host, nothing built) against
  the no-op start-all WITHOUT one (images present), interleaved in the same run; target: <= 1.5x.
  The two deployments run side by side on the same lab hosts (the build one as compose project
  `cfimg` on other ports), so neither variant ever recreates the other's containers.
- a one-line source change end to end: a commit on verda-track, then start-all (fetch, cached
  rebuild of the worker, recreate, checks), timed per round.

Holds the lab lock for the whole run; prints a markdown table and writes
bench/results/images.{md,json}. Removes its `cfimg` deployment at the end.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from measure import timed  # noqa: E402
from run import INVOKE, LOCK, REPO, RESULTS, WORK, ensure_lab, inventory_for, must, say, tool  # noqa: E402


def build_inventory(url: str) -> Path:
    import yaml
    path = inventory_for(["mello", "verda"], "images-build")
    data = yaml.safe_load(path.read_text())
    data["project"] = "cfimg"
    data["ports"] = {"redis": 6390, "queue_manager": 3010, "admin": 8090, "frontend_base": 8500,
                     "worker_comfyui": 8310}
    for spec in data["hosts"].values():
        spec["workdir"] = "cfimg"
    data["images"] = {"source": "build", "repository": url, "sources": {"redis": "present"},
                      "queue_manager": "comfyume-queue-manager:bench", "admin": "comfyume-admin:bench",
                      "frontend": "comfyume-frontend:bench", "worker": "comfyume-worker:bench"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _known_hosts_current(hosts) -> bool:
    from comfyume_fab.lab import hostsvc, manager
    try:
        known = (manager.LAB_DIR / "known_hosts").read_text()
        return all(f"{h.address} {hostsvc.host_public_key(h)}" in known for h in hosts)
    except OSError:
        return False


def run_noop(inv: Path) -> tuple[float, str]:
    wall, proc = timed([INVOKE, "start-all", "--hosts", str(inv)], cwd=str(REPO), env={"COMFYUME_HOSTS": ""})
    if proc.returncode != 0 or "nothing changed" not in proc.stdout:
        raise SystemExit(f"bench: no-op start-all was not a no-op (exit {proc.returncode}):\n"
                         f"{proc.stderr[-1500:]}{proc.stdout[-800:]}")
    return wall, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the lab needs root")
    WORK.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        from comfyume_fab.lab import gitserver, manager
        hosts = ensure_lab(workers=1)
        if not _known_hosts_current(hosts):  # another checkout's lab.up replaced the hosts' keys
            manager.up(workers=1, num_users=3, say=say)
            hosts = manager.load_state()
        url = gitserver.ensure(hosts, say)
        present = manager.LAB_DIR / "hosts.yaml"
        build = build_inventory(url)
        must("start-all (present)", tool("start-all", "--hosts", str(present)))
        must("start-all (build, first)", tool("start-all", "--hosts", str(build)))
        pairs = []
        for rnd in range(ns.rounds + 1):  # round 0: warm-up
            order = [("present", present), ("build", build)][:: 1 if rnd % 2 else -1]
            walls = {name: run_noop(inv)[0] for name, inv in order}
            say(f"  no-op round {rnd}: present {walls['present']:.3f} s, build {walls['build']:.3f} s")
            if rnd:
                pairs.append(walls["build"] / walls["present"])
        change = []
        for rnd in range(1, max(2, ns.rounds // 2) + 1):
            gitserver.commit(hosts, "verda-track", "comfyui-worker/NOTES.md", f"bench change {rnd} {time.time()}\n",
                             f"bench: one-line change {rnd}")
            wall = must("start-all after a one-line change", tool("start-all", "--hosts", str(build)))
            say(f"  one-line change round {rnd}: {wall:.2f} s end to end")
            change.append(wall)
        tool("stop-all", "--hosts", str(build), "--down")
    ratio = statistics.median(pairs)
    md = ("| target | measured | met |\n|---|---|---|\n"
          f"| no-op start-all with a build source: <= 1.5x the no-op without one | {ratio:.2f}x "
          f"(median of {len(pairs)} paired rounds) | {'yes' if ratio <= 1.5 else 'no'} |\n"
          f"| one-line source change end to end (fetch + cached rebuild + recreate + checks) | "
          f"{statistics.median(change):.1f} s median of {len(change)} | - |\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "images.md").write_text(md)
    (RESULTS / "images.json").write_text(json.dumps({"noop_ratios": pairs, "change_s": change}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
