"""comfyume-fab benchmarks: the tool against the SSH floor and Ansible, on the real lab.

    .venv/bin/python bench/run.py            # full run (~10 min)
    .venv/bin/python bench/run.py --quick    # fewer rounds (~3 min)

Holds the lab's exclusive lock (/run/comfyume-lab.lock, the one the tests take) for the whole
run, brings up the lab sizes it needs, runs every scenario several times INTERLEAVED (the
variants of a scenario alternate within one round, the order rotating each round), and writes
bench/results/latest.{md,json} (and bench/RESULTS.md on a full run). It always leaves the lab
as `invoke lab.up` makes it (mello + verda) with the dual-server deployment started.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from measure import Sample, SshdLogs, paired_ratios, summary, timed  # noqa: E402

LOCK = Path("/run/comfyume-lab.lock")
RESULTS = BENCH / "results"
WORK = RESULTS / "work"
VENV_BIN = REPO / ".venv" / "bin"
INVOKE = str(VENV_BIN / "invoke")
COMFYUME_FAB = str(VENV_BIN / "comfyume-fab")  # the installed command: hands a one-shot task over before Invoke loads
PYTHON = str(VENV_BIN / "python")
ANSIBLE_VENV = BENCH / ".venv-ansible"
ANSIBLE = str(ANSIBLE_VENV / "bin" / "ansible")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- lab ---------------------------------------------------------------------------------------

def lab_names() -> list[str]:
    from comfyume_fab.lab import manager
    return [h.name for h in manager.load_state()]


def lab_alive() -> bool:
    from comfyume_fab.lab import hostsvc, manager
    hosts = manager.load_state()
    if not hosts or not (manager.LAB_DIR / "known_hosts").exists():
        return False
    return all(hostsvc.read_pid(h.sshd_pid) and (not h.engine or hostsvc.read_pid(h.dockerd_pid)) for h in hosts)


def ensure_lab(workers: int) -> list:
    """A lab of mello + `workers` worker hosts: reused when exactly that lab is up, else made."""
    from comfyume_fab.lab import faults, layout, manager
    want = [h.name for h in layout.lab_hosts(workers)]
    if lab_names() == want and lab_alive():
        say(f"lab: reusing the running {len(want)}-host lab")
        faults.heal_all()
    else:
        say(f"lab: bringing up {len(want)} hosts (mello + {workers} worker(s))")
        manager.up(workers=workers, sshd_only=0, num_users=3, say=lambda m: say(m), takeover=True)
    return manager.load_state()


def inventory_for(names: list[str], tag: str) -> Path:
    """An inventory of some lab hosts (same shape as .lab/hosts.yaml) under bench/results/work."""
    import yaml
    from comfyume_fab.lab import manager
    from comfyume_fab.lab.files import inventory_dict
    hosts = {h.name: h for h in manager.load_state()}
    data = inventory_dict([hosts[n] for n in names], manager.LAB_DIR / "id_ed25519",
                          manager.LAB_DIR / "known_hosts", 3, secrets_file=str(manager.LAB_DIR / "secrets.env"))
    path = WORK / tag / "hosts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tool(*args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    return timed([INVOKE, *args], cwd=str(REPO), timeout=timeout, env={"COMFYUME_HOSTS": ""})


def must(what: str, res: tuple[float, subprocess.CompletedProcess]) -> float:
    wall, proc = res
    if proc.returncode != 0:
        raise SystemExit(f"bench: {what} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}{proc.stdout[-2000:]}")
    return wall


# --- variants ----------------------------------------------------------------------------------

class Runner:
    """Runs variants and records samples with the SSH connections each one opened."""

    def __init__(self, hosts, samples: list[Sample]):
        self.logs = SshdLogs(hosts)
        self.samples = samples

    def record(self, scenario: str, variant: str, rnd: int, argv: list[str], names: list[str],
               env: dict | None = None, check=None, cleanup=None) -> Sample:
        mark = self.logs.mark()
        wall, proc = timed(argv, cwd=str(REPO), env=env)
        time.sleep(0.05)  # let sshd flush its log lines
        conns = self.logs.count_since(mark, names)
        rc = proc.returncode
        extra = {}
        if rc == 0 and check:
            problem = check(proc)
            if problem:
                rc, extra["invalid"] = 99, problem
        if cleanup:
            cleanup()
        s = Sample(scenario, variant, rnd, wall, rc, conns, extra,
                   tail="" if rc == 0 else (proc.stderr[-800:] + proc.stdout[-800:]))
        self.samples.append(s)
        flag = "" if s.ok else f"  FAILED rc={rc} {extra.get('invalid', '')} {s.tail[-300:]!r}"
        say(f"  {scenario:12} {variant:16} round {rnd}: {wall:6.3f} s  conns {conns}{flag}")
        return s


def status_variant(inv: Path):
    return [INVOKE, "status", "--hosts", str(inv)], None


def floor_variant(mode: str, scripts: Path, out: Path):
    from comfyume_fab.lab import manager
    argv = ["bash", str(BENCH / "floor.sh"), mode, str(manager.LAB_DIR / "ssh_config"), str(scripts), str(out)]

    def check(_proc):
        texts = {p.name: p.read_text(errors="replace") for p in out.glob("*.out")}
        if mode.startswith("status"):
            bad = [n for n, t in texts.items() if "== done" not in t]
            return f"incomplete output: {bad}" if bad else None
        changed = [n for n, t in texts.items() if "CHANGED" in t]
        return f"the no-op floor changed something on {changed}" if changed else None
    return argv, check


def ansible_variant(inv_yaml: Path, nhosts: int, tuned: bool = False):
    """Ansible ad-hoc `-m command` with one `bash -c SCRIPT` per host (the floor's script), forks >=
    hosts, host keys checked, every run cold (its ControlPersist masters are closed afterwards).
    Defaults otherwise; `tuned` adds what an Ansible user would set for speed: pipelining and a
    fixed interpreter (no discovery round trip)."""
    cp_dir = Path(tempfile.mkdtemp(prefix="cfab-ans-cp-"))
    home = WORK / "ansible-home"
    cfg = WORK / "ansible.cfg"  # empty: only the settings below, never a stray ansible.cfg
    if not cfg.exists():
        cfg.write_text("[defaults]\n")
    env = {"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp_dir), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False", "ANSIBLE_FORKS": str(max(5, nhosts))}
    if tuned:
        env |= {"ANSIBLE_PIPELINING": "True", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}
    argv = [ANSIBLE, "all", "-i", str(inv_yaml), "-f", str(max(5, nhosts)), "-o", "-m", "command",
            "-a", "bash -c {{ cfab_script | quote }}"]

    def check(proc):
        ok = proc.stdout.count("| CHANGED | rc=0")
        return None if ok == nhosts and proc.stdout.count("== done") == nhosts else \
            f"{ok}/{nhosts} hosts ok: {proc.stdout[-300:]}"

    def cleanup():
        # close the ControlPersist masters Ansible left (each run starts cold, like the tool does)
        for sock in cp_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
        shutil.rmtree(cp_dir, ignore_errors=True)
    return argv, env, check, cleanup


def interleave(runner: Runner, scenario: str, rounds: int, variants: dict, names_for: dict) -> None:
    """variants: name -> zero-argument factory returning (argv, env, check, cleanup)."""
    order = list(variants)
    for rnd in range(rounds + 1):  # round 0 is a warm-up, recorded but not summarised
        k = rnd % len(order)
        for name in order[k:] + order[:k]:
            argv, env, check, cleanup = variants[name]()
            runner.record(scenario, name, rnd, argv, names_for[name], env=env, check=check, cleanup=cleanup)


def v_status(inv, command: str = INVOKE):
    def make():
        argv, _ = status_variant(inv)
        return [command, *argv[1:]], TOOL_ENV, None, None
    return make


TOOL_ENV = {"COMFYUME_HOSTS": ""}  # the tool as users run it: the inventory named on the command line


def v_floor(mode, scripts, out):
    def make():
        argv, check = floor_variant(mode, scripts, out)
        return argv, None, check, None
    return make


def v_ansible(inv_yaml, n, tuned=False):
    return lambda: ansible_variant(inv_yaml, n, tuned)


def v_start(inv, base: Path | None = None, command: str = INVOKE):
    def make():
        def check(proc):
            return None if "nothing changed" in proc.stdout else f"not a no-op: {proc.stdout[-300:]}"
        env = _base_env(base) if base else TOOL_ENV
        return [command, *_root(base), "start-all", "--hosts", str(inv)], env, check, None
    return make


def v_status_base(inv, base: Path):
    return lambda: ([INVOKE, *_root(base), "status", "--hosts", str(inv)], _base_env(base), None, None)


def _root(base: Path | None) -> list[str]:
    return ["--search-root", str(base)] if base else []


def _base_env(base: Path | None) -> dict:
    """The tool at another revision: its tasks.py (--search-root) and its package (PYTHONPATH)."""
    return {"COMFYUME_HOSTS": "", **({"PYTHONPATH": str(base)} if base else {})}


def extract_baseline(rev: str) -> Path:
    """`git archive REV` of the tool into bench/results/work/baseline (read-only for git)."""
    out = WORK / "baseline"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "tasks.py", "comfyume_fab", "compose"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


# --- scenarios ---------------------------------------------------------------------------------

def floor_scripts(inv: Path, tag: str) -> tuple[Path, object]:
    from hostscripts import lab_spec, write_floor_scripts
    spec = lab_spec(inv)
    return write_floor_scripts(spec, WORK / "scripts" / tag), spec


def ensure_ansible() -> None:
    if Path(ANSIBLE).exists():
        return
    say("installing ansible-core into bench/.venv-ansible (once)")
    subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
    subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)


def phase_scale(samples: list[Sample], rounds: int, quick: bool) -> dict:
    """Scenario 2 (and the floor and Ansible at 8 hosts): one 8-host lab, deployed with all 8
    hosts; `status` on inventories of 2, 4 and 8 of its hosts, interleaved."""
    from hostscripts import write_ansible_inventory
    from comfyume_fab.lab import manager
    hosts = ensure_lab(workers=7)
    names = [h.name for h in hosts]
    invs = {n: inventory_for(names[:n], f"inv-{n}") for n in (2, 4, 8)}
    say("scale: start-all on all 8 hosts")
    t = must("start-all (8 hosts)", tool("start-all", "--hosts", str(invs[8])))
    say(f"scale: deployed in {t:.1f} s")
    scripts = {}
    for n in (2, 4, 8):
        scripts[n], spec = floor_scripts(invs[n], f"scale-{n}")
        if n in (2, 8):
            write_ansible_inventory(spec, manager.LAB_DIR, WORK / f"ansible-{n}.yml")
    runner = Runner(hosts, samples)
    variants = {f"status-{n}": v_status(invs[n]) for n in (2, 4, 8)}
    variants |= {f"floor-{n}": v_floor("status", scripts[n], WORK / f"out-floor-{n}")
                 for n in ((2, 8) if quick else (2, 4, 8))}
    variants |= {f"ansible-{n}": v_ansible(WORK / f"ansible-{n}.yml", n) for n in ((8,) if quick else (2, 8))}
    names_for = {v: names[:int(v.rsplit("-", 1)[1])] for v in variants}
    interleave(runner, "scale", rounds, variants, names_for)
    return {"deploy_8_s": t}


def phase_two(samples: list[Sample], rounds: int, cold_runs: int, quick: bool, base: Path | None = None) -> dict:
    """The default 2-host lab: scenarios 1, 3, 4, 5 (and 6 from every sample's sshd counts)."""
    from hostscripts import write_ansible_inventory
    from comfyume_fab.lab import manager
    hosts = ensure_lab(workers=1)
    inv = manager.LAB_DIR / "hosts.yaml"
    t = must("start-all (2 hosts)", tool("start-all", "--hosts", str(inv)))
    say(f"two: deployed in {t:.1f} s")
    scripts, spec = floor_scripts(inv, "two")
    write_ansible_inventory(spec, manager.LAB_DIR, WORK / "ansible-two.yml")
    runner = Runner(hosts, samples)
    names = [h.name for h in hosts]
    say("scenario 1+5: status vs the floor vs Ansible")
    variants = {"tool": v_status(inv),
                "tool-cf": v_status(inv, command=COMFYUME_FAB),
                "floor": v_floor("status", scripts, WORK / "out-status"),
                "floor-min": v_floor("status-min", scripts, WORK / "out-status-min"),
                "ansible": v_ansible(WORK / "ansible-two.yml", 2)}
    if not quick:
        variants["ansible-tuned"] = v_ansible(WORK / "ansible-two.yml", 2, tuned=True)
    if base:
        variants["baseline"] = v_status_base(inv, base)
    interleave(runner, "status", rounds, variants, {v: names for v in variants})
    say("scenario 3: no-op start-all vs the floor")
    variants = {"tool": v_start(inv),
                "tool-cf": v_start(inv, command=COMFYUME_FAB),
                "floor": v_floor("start", scripts, WORK / "out-start")}
    if base:
        variants["baseline"] = v_start(inv, base)
    interleave(runner, "noop-start", rounds, variants, {v: names for v in variants})
    say("scenario 4: cold start-all (after stop-all), with the tool's own per-command timeline")
    cold = []
    for k in range(cold_runs):
        down = k % 2 == 1  # alternate: containers stopped / containers removed
        must("stop-all", tool("stop-all", "--hosts", str(inv), *(["--down"] if down else [])))
        trace = WORK / f"cold-{k}.json"
        mark = runner.logs.mark()
        wall, proc = timed([PYTHON, str(BENCH / "toolrun.py"), "--trace", str(trace), "--",
                            "start-all", "--hosts", str(inv)], cwd=str(REPO), env={"COMFYUME_HOSTS": ""})
        time.sleep(0.05)
        conns = runner.logs.count_since(mark, names)
        split = cold_split(json.loads(trace.read_text()), wall)
        split["after"] = "stop-all --down" if down else "stop-all"
        s = Sample("cold-start", "tool", k + 1, wall, proc.returncode, conns, split,
                   tail="" if proc.returncode == 0 else proc.stderr[-800:])
        samples.append(s)
        cold.append(split)
        say(f"  cold-start   after {split['after']:15} {wall:6.2f} s: compose {split['compose_s']:.2f} s, "
            f"health wait {split['health_wait_s']:.2f} s, overhead {split['overhead_s']:.2f} s "
            f"({split['overhead_pct']:.1f} %)  conns {conns}")
        if proc.returncode != 0:
            raise SystemExit(f"bench: cold start-all failed:\n{proc.stderr[-2000:]}")
    return {"deploy_2_s": t}


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _length(intervals) -> float:
    return sum(b - a for a, b in _union(list(intervals)))


def cold_split(trace: dict, wall: float) -> dict:
    """Wall time of a cold start-all = time inside `docker compose up` on some host (union over
    hosts) + time waiting for containers to report healthy (the tool's wait loop, not already
    inside compose) + the orchestrator's own overhead (everything else: Python start-up and
    imports, planning, SSH connects, state reads, uploads, lock, Redis check, probe, record)."""
    ev = trace["events"]
    compose = [(e["start"], e["end"]) for e in ev if e["kind"] == "run" and "docker compose" in e["detail"]
               and " up " in e["detail"]]
    health_hosts: dict[str, list] = {}
    for e in ev:
        if e["kind"] == "run" and e["step"] == "wait healthy":
            health_hosts.setdefault(e["host"], []).append(e)
    health = [(min(x["start"] for x in es), max(x["end"] for x in es)) for es in health_hosts.values()]
    compose_s = _length(compose)
    busy_s = _length(compose + health)
    polls = sum(len(es) for es in health_hosts.values())
    first = min((e["start"] for e in ev), default=0.0)
    other = {}
    for e in ev:
        key = e["step"] if e["kind"] == "run" else e["kind"]
        other[key] = other.get(key, 0.0) + (e["end"] - e["start"])
    return {"wall_s": wall, "compose_s": compose_s, "health_wait_s": busy_s - compose_s, "health_polls": polls,
            "overhead_s": wall - busy_s, "overhead_pct": 100 * (wall - busy_s) / wall,
            "overhead_incl_health_pct": 100 * (wall - compose_s) / wall,
            "before_first_connect_s": first + (wall - trace["end"]),
            "per_step_s": {k: round(v, 3) for k, v in sorted(other.items(), key=lambda kv: -kv[1])}}


# --- report ------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(),
            "cpu": cpu, "mem_gib": round(mem / 2**20, 1), "kernel": platform.release(), "python": platform.python_version(),
            "revision": rev, "openssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()}


def analyse(samples: list[Sample], quick: bool) -> dict:
    def sel(scn, var):
        return [s for s in samples if s.scenario == scn and s.variant == var and s.round > 0]

    def walls(scn, var):
        return [s.wall_s for s in sel(scn, var) if s.ok]

    out: dict = {"variants": {}, "ratios": {}, "targets": [], "connections": {}}
    for s in samples:
        key = f"{s.scenario}/{s.variant}"
        if key not in out["variants"]:
            out["variants"][key] = {**summary(walls(s.scenario, s.variant) if s.scenario != "cold-start" else
                                              [x.wall_s for x in samples if x.scenario == "cold-start" and x.ok]),
                                    "failed": sum(1 for x in samples if x.scenario == s.scenario and
                                                  x.variant == s.variant and not x.ok)}

    def ratio(name, a, b):
        r = paired_ratios(sel(*a), sel(*b))
        out["ratios"][name] = summary(r)
        return out["ratios"][name].get("median")

    r1 = ratio("status 2 hosts / floor", ("status", "tool"), ("status", "floor"))
    ratio("status 2 hosts / floor with the essential reads only", ("status", "tool"), ("status", "floor-min"))
    r2 = ratio("status 8 hosts / status 2 hosts", ("scale", "status-8"), ("scale", "status-2"))
    ratio("status 4 hosts / status 2 hosts", ("scale", "status-4"), ("scale", "status-2"))
    ratio("floor 8 hosts / floor 2 hosts", ("scale", "floor-8"), ("scale", "floor-2"))
    ratio("status 8 hosts / floor 8 hosts", ("scale", "status-8"), ("scale", "floor-8"))
    r3 = ratio("no-op start-all / floor", ("noop-start", "tool"), ("noop-start", "floor"))
    r1c = ratio("comfyume-fab status / floor", ("status", "tool-cf"), ("status", "floor"))
    r3c = ratio("comfyume-fab start-all (no-op) / floor", ("noop-start", "tool-cf"), ("noop-start", "floor"))
    r5 = ratio("Ansible / status (2 hosts)", ("status", "ansible"), ("status", "tool"))
    ratio("Ansible tuned / status (2 hosts)", ("status", "ansible-tuned"), ("status", "tool"))
    ratio("status now / status at the baseline revision", ("status", "tool"), ("status", "baseline"))
    ratio("no-op start-all now / at the baseline revision", ("noop-start", "tool"), ("noop-start", "baseline"))
    r5b = ratio("Ansible / status (8 hosts)", ("scale", "ansible-8"), ("scale", "status-8"))
    # Across the two labs (different background load, NOT interleaved): for reference only.
    s8, s2 = summary(walls("scale", "status-8")), summary(walls("status", "tool"))
    if s8.get("n") and s2.get("n"):
        out["cross_lab"] = {"status 8 hosts (8-host lab) / status 2 hosts (2-host lab), medians":
                            s8["median"] / s2["median"]}
    cold = [s.extra for s in samples if s.scenario == "cold-start" and s.ok]
    out["cold"] = {"runs": cold, "overhead_pct": summary([c["overhead_pct"] for c in cold]),
                   "overhead_incl_health_pct": summary([c["overhead_incl_health_pct"] for c in cold]),
                   "compose_s": summary([c["compose_s"] for c in cold]),
                   "health_wait_s": summary([c["health_wait_s"] for c in cold]),
                   "overhead_s": summary([c["overhead_s"] for c in cold])}
    r4 = out["cold"]["overhead_pct"].get("median")
    # scenario 6: SSH connections per host per task run, from the hosts' sshd logs
    for s in samples:
        if not s.ok:
            continue
        key = f"{s.scenario}/{s.variant}"
        per = sorted(set(s.connections.values()))
        c = out["connections"].setdefault(key, set())
        c.update(per)
    out["connections"] = {k: sorted(v) for k, v in out["connections"].items()}
    tool_keys = [k for k in out["connections"] if k.split("/")[1].startswith(("tool", "status-"))]
    one_conn = all(out["connections"][k] == [1] for k in tool_keys) and bool(tool_keys)

    def target(name, value, limit, op, fmt):
        met = value is not None and (value <= limit if op == "<=" else value < limit if op == "<" else value >= limit)
        out["targets"].append({"target": name, "measured": None if value is None else fmt.format(value),
                               "limit": f"{op} {limit:g}", "met": met})
    target("status, 2 hosts: <= 1.5x the floor", r1, 1.5, "<=", "{:.2f}x")
    target("status, 2 hosts: <= 1.3x the floor (issue 14)", r1, 1.3, "<=", "{:.2f}x")
    target("comfyume-fab status, 2 hosts: <= 1.3x the floor (issue 14)", r1c, 1.3, "<=", "{:.2f}x")
    target("comfyume-fab no-op start-all: <= 1.5x the floor (issue 14)", r3c, 1.5, "<=", "{:.2f}x")
    target("status, 8 hosts: <= 1.3x status with 2 hosts", r2, 1.3, "<=", "{:.2f}x")
    target("no-op start-all: <= 1.5x the floor", r3, 1.5, "<=", "{:.2f}x")
    target("cold start-all: orchestrator overhead < 10 % of total", r4, 10, "<", "{:.1f} %")
    target(">= 5x faster than Ansible ad-hoc (2 hosts)", r5, 5, ">=", "{:.1f}x")
    target(">= 5x faster than Ansible ad-hoc (8 hosts)", r5b, 5, ">=", "{:.1f}x")
    out["targets"].append({"target": "exactly one SSH connection per host per task", "limit": "== 1",
                           "measured": ", ".join(f"{k}: {v}" for k, v in out["connections"].items()
                                                 if k in tool_keys or k.startswith("cold")),
                           "met": one_conn})
    return out


def _s(x: dict, key: str) -> str:
    return f"{x[key]:.3f}" if x.get(key) is not None else "-"


def markdown(m: dict, a: dict, quick: bool, rounds: int, extra: dict) -> str:
    L = [f"Measured {m['date']} on {m['nproc']} × {m['cpu']} ({m['mem_gib']} GiB, Linux {m['kernel']}, "
         f"Python {m['python']}, {m['openssh']}), revision {m['revision']}; "
         f"{'--quick, ' if quick else ''}{rounds} interleaved rounds after a warm-up round"
         + (f"; baseline revision {m['baseline']}" if m.get("baseline") else "") + ".", "",
         "| scenario | variant | n | median s | IQR s | min–max s | SSH conns/host |", "|---|---|---|---|---|---|---|"]
    labels = {"status/tool": ("1. status, 2 hosts", "invoke status"), "status/floor": ("1. status, 2 hosts", "floor (ssh+bash, same reads)"),
              "status/floor-min": ("1. status, 2 hosts", "floor (ssh+bash, essential reads only)"),
              "status/ansible": ("5. status-style read, 2 hosts", "Ansible ad-hoc (defaults)"),
              "status/ansible-tuned": ("5. status-style read, 2 hosts", "Ansible ad-hoc (pipelining, fixed interpreter)"),
              "noop-start/tool": ("3. no-op start-all", "invoke start-all"),
              "status/tool-cf": ("1. status, 2 hosts", "comfyume-fab status"),
              "noop-start/tool-cf": ("3. no-op start-all", "comfyume-fab start-all"),
              "status/baseline": ("1. status, 2 hosts", "invoke status at the baseline revision"),
              "noop-start/baseline": ("3. no-op start-all", "invoke start-all at the baseline revision"), "noop-start/floor": ("3. no-op start-all", "floor (ssh+bash)"),
              "cold-start/tool": ("4. cold start-all", "invoke start-all")}
    for key, v in a["variants"].items():
        scn, var = key.split("/")
        lab = labels.get(key) or ("2. status, 8-host lab", {"status": "invoke status", "floor": "floor",
                                                             "ansible": "Ansible ad-hoc"}[var.split("-")[0]]
                                  + f", {var.split('-')[1]} hosts")
        conns = a["connections"].get(key, [])
        fail = f" ({v['failed']} failed)" if v.get("failed") else ""
        L.append(f"| {lab[0]} | {lab[1]}{fail} | {v.get('n', 0)} | {_s(v, 'median')} | {_s(v, 'p25')}–{_s(v, 'p75')} | "
                 f"{_s(v, 'min')}–{_s(v, 'max')} | {'/'.join(map(str, conns)) or '-'} |")
    L += ["", "Ratios (median of the per-round ratios of interleaved runs; min–max in brackets):", "",
          "| ratio | median | min–max |", "|---|---|---|"]
    for name, r in a["ratios"].items():
        if r.get("n"):
            L.append(f"| {name} | {r['median']:.2f}x | {r['min']:.2f}–{r['max']:.2f} |")
    for name, r in a.get("cross_lab", {}).items():
        L.append(f"| {name} (not interleaved: the 8-host lab also carries 6 more engines' background load) "
                 f"| {r:.2f}x | - |")
    c = a["cold"]
    if c["runs"]:
        L += ["", "Cold start-all split (from the tool's own per-command timeline):", "",
              "| run | after | total s | in `docker compose up` s | waiting for healthchecks s | orchestrator overhead s | overhead % |",
              "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(c["runs"], 1):
            L.append(f"| {i} | {r['after']} | {r['wall_s']:.2f} | {r['compose_s']:.2f} | {r['health_wait_s']:.2f} | "
                     f"{r['overhead_s']:.2f} | {r['overhead_pct']:.1f} |")
    L += ["", "Targets (medians):", "", "| target | measured | met |", "|---|---|---|"]
    for t in a["targets"]:
        L.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    if extra:
        L += ["", "Setup (not timed): " + ", ".join(f"{k} {v:.1f} s" for k, v in extra.items())]
    return "\n".join(L) + "\n"


# --- main --------------------------------------------------------------------------------------

def restore_default_lab() -> None:
    """Leave the lab as `invoke lab.up` makes it, with the dual-server deployment started."""
    from comfyume_fab.lab import manager
    try:
        ensure_lab(workers=1)
        must("start-all (restore)", tool("start-all", "--hosts", str(manager.LAB_DIR / "hosts.yaml")))
        say("lab: default 2-host lab, deployment started")
    except BaseException as exc:  # noqa: BLE001 - report, never hide, a failed restore
        say(f"lab: RESTORE FAILED ({exc}); run `invoke lab.up && invoke start-all --hosts .lab/hosts.yaml`")
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and variants (~3 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per scenario (default 7, --quick 2)")
    ap.add_argument("--cold", type=int, help="cold start-all runs (default 4, --quick 1)")
    ap.add_argument("--skip-scale", action="store_true", help="skip the 8-host lab (scenario 2)")
    ap.add_argument("--baseline", metavar="REV", help="also time status and no-op start-all of the tool at git "
                    "revision REV (git archive; interleaved), e.g. the commit before an optimisation")
    ns = ap.parse_args()
    rounds = ns.rounds or (2 if ns.quick else 7)
    cold_runs = ns.cold if ns.cold is not None else (1 if ns.quick else 4)
    if os.geteuid() != 0:
        raise SystemExit("bench: the lab needs root")
    ensure_ansible()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    base = extract_baseline(ns.baseline) if ns.baseline else None
    t_start = time.monotonic()
    samples: list[Sample] = []
    extra: dict = {}
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for the lab lock {LOCK} (another test run holds it)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        say("holding the lab lock")
        try:
            if not ns.skip_scale:
                extra |= phase_scale(samples, rounds, ns.quick)
            extra |= phase_two(samples, rounds, cold_runs, ns.quick, base)
        finally:
            restore_default_lab()
    elapsed = time.monotonic() - t_start
    m = machine()
    m["baseline"] = ns.baseline
    a = analyse(samples, ns.quick)
    md = markdown(m, a, ns.quick, rounds, extra)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(md)
    (RESULTS / "latest.json").write_text(json.dumps(
        {"machine": m, "quick": ns.quick, "rounds": rounds, "elapsed_s": elapsed, "setup": extra,
         "analysis": a, "samples": [asdict(s) for s in samples]}, indent=1))
    if not ns.quick and not ns.skip_scale:
        (BENCH / "RESULTS.md").write_text("# Benchmark results (latest full run of `bench/run.py`)\n\n" + md)
    print(md)
    say(f"done in {elapsed:.0f} s; results in {RESULTS / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
