"""The floor's and Ansible's per-host shell scripts, written once per lab before any timing.

Each script does, with plain tools ON the host (docker, cat, curl, redis-cli), the reads that
`invoke status` does for that host (or the steps of a no-op `start-all`). The tool's inventory
loader and planner are used here only to learn names, ports and expected hashes, never timed.
The Redis password is read on the host from the deployed .env into REDISCLI_AUTH (never argv).
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

INSPECT = ("{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} "
           "{{.RestartCount}} {{index .Config.Labels \"org.comfyume.env-hash\"}}")


@dataclass
class HostInfo:
    name: str
    address: str
    user: str
    role: str  # app | worker
    workdir: str
    services: tuple[str, ...]
    env_hash: str
    host_hash: str
    deployed: str  # the deployed.json text start-all writes
    worker_id: str | None
    uploaded: str  # what `cat uploaded.sha256; sha256sum -- .env FILES` prints when up to date (the
    # marker holds the host hash and the sums the upload wrote; then the sums now, the same)
    files: tuple[str, ...]  # .env and the compose files, in the order start-all checksums them
    service_hashes: dict = None  # service -> its own fingerprint (its container's env-hash label)


@dataclass
class LabSpec:
    project: str
    app_ip: str
    redis_port: int
    qm_port: int
    comfyui_port: int
    hosts: list[HostInfo]
    compose_files: dict[str, tuple[str, ...]]
    audit_line: str

    @property
    def worker_ids(self) -> list[str]:
        return [h.worker_id for h in self.hosts if h.worker_id]


def _lab_salt(host) -> str:
    """The fingerprint salt start-all left on a lab host (its home is a folder of this machine); a
    new one for a host never deployed to, as start-all would make."""
    from comfyume_fab.host.facts import salt
    from comfyume_fab.lab.layout import LAB_ROOT
    path = LAB_ROOT / "hosts" / host.name / "home" / host.workdir.removeprefix("~/") / salt.SALT_FILE
    try:
        return salt.parse_salt(path.read_text()) or salt.new_salt()
    except OSError:
        return salt.new_salt()


def lab_spec(inventory: Path) -> LabSpec:
    import hashlib
    from comfyume_fab.inventory import load_inventory
    from comfyume_fab.ops.audit import audit_line, deployed_record, local_revision
    from comfyume_fab.plan.planner import make_plan
    inv = load_inventory(str(inventory))
    plan = make_plan(inv, salts={h.name: _lab_salt(h) for h in inv.hosts})
    rev = local_revision()
    hosts = []
    for hp in plan.hosts:
        hh = hp.host_hash
        texts = {".env": hp.env_file_text(), **hp.files}
        names = (".env", *sorted(hp.files))
        sums = [f"{hashlib.sha256(texts[n].encode()).hexdigest()}  {n}" for n in names]
        hosts.append(HostInfo(
            name=hp.name, address=hp.host.address, user=hp.host.user, role="app" if hp.app_services else "worker",
            workdir=hp.host.workdir.removeprefix("~/"), services=tuple(hp.services),
            env_hash=str(hp.env.get("CFAB_ENV_HASH")), host_hash=hh,
            deployed=deployed_record(rev, plan.config_hash, hh, plan.mode).decode(),
            worker_id=hp.host.worker_id if hp.worker_services else None,
            uploaded="\n".join([hh, *sums, *sums]), files=names, service_hashes=dict(hp.service_hashes)))
    return LabSpec(project=inv.project, app_ip=plan.app.host.tailscale_ip, redis_port=inv.ports.redis,
                   qm_port=inv.ports.queue_manager, comfyui_port=inv.ports.worker_comfyui, hosts=hosts,
                   compose_files={hp.name: tuple(hp.compose_files) for hp in plan.hosts},
                   audit_line=audit_line("start-all", rev, plan.config_hash, plan.mode, "unchanged",
                                         "by=bench-floor"))


# --- building blocks ---------------------------------------------------------------------------

def _head(h: HostInfo) -> str:
    return f"set -u\ncd {shlex.quote(h.workdir)} || exit 20\n"


def _auth() -> str:
    # the password goes from the host's own .env into the environment, never into an argv
    return ("REDISCLI_AUTH=$(sed -n \"s/^REDIS_PASSWORD='\\(.*\\)'$/\\1/p\" .env); export REDISCLI_AUTH\n")


def _containers(spec: LabSpec) -> str:
    ps = f"docker ps -aq --filter label=com.docker.compose.project={spec.project}"
    return (f"echo '== containers'\nids=$({ps}) && {{ [ -z \"$ids\" ] || "
            f"docker inspect --format {shlex.quote(INSPECT)} $ids; }}\n")


def _deployed_gpu() -> str:
    return ("echo '== deployed'; cat deployed.json 2>/dev/null\n"
            "echo '== gpu'; nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu "
            "--format=csv,noheader,nounits 2>&1 || echo 'no gpu'\n")


def _redis_ping(spec: LabSpec) -> str:
    return (f"echo '== redis'; redis-cli --no-auth-warning -h {spec.app_ip} -p {spec.redis_port} PING "
            f"| grep -q PONG && echo PONG || {{ echo 'REDIS FAILED'; exit 21; }}\n")


def _probe(spec: LabSpec) -> str:
    """POST a model-free graph with a fresh colour (defeats ComfyUI's cache), poll its history."""
    url = f"http://127.0.0.1:{spec.comfyui_port}"
    return f"""echo '== probe'
color=$(( (RANDOM << 9 ^ RANDOM) & 16777215 ))
body='{{"client_id":"bench-floor","prompt":{{"1":{{"class_type":"EmptyImage","inputs":{{"width":64,"height":64,"batch_size":1,"color":'$color'}}}},"2":{{"class_type":"SaveImage","inputs":{{"images":["1",0],"filename_prefix":"bench-floor"}}}}}}}}'
id=$(curl -fsS -m 30 -H 'Content-Type: application/json' -d "$body" {url}/prompt | sed -n 's/.*"prompt_id": *"\\([^"]*\\)".*/\\1/p')
[ -n "$id" ] || {{ echo 'PROBE POST FAILED'; exit 22; }}
ok=
for i in $(seq 300); do
  h=$(curl -fsS -m 5 {url}/history/$id) || break
  case "$h" in *'"status_str": "success"'*) ok=1; break;; *'"status_str": "error"'*) break;; esac
  sleep 0.1
done
[ -n "$ok" ] && echo "probe $id success" || {{ echo 'PROBE FAILED'; exit 23; }}
"""


def _record(h: HostInfo, spec: LabSpec) -> str:
    return (f"printf '%s' {shlex.quote(h.deployed)} > deployed.json.part && chmod 600 deployed.json.part && "
            f"mv deployed.json.part deployed.json\n"
            f"printf '%s\\n' {shlex.quote(spec.audit_line)} >> audit.log && chmod 600 audit.log\n")


# --- status ------------------------------------------------------------------------------------

def _status_extras(h: HostInfo, spec: LabSpec) -> str:
    """What `invoke status` also reads and shows: engine and Compose versions, the env hash of the
    uploaded .env (drift check) and, on the app host, where Redis is published. The same
    command lines as the tool's (comfyume_fab.host.facts, .commands), run one after the other."""
    from comfyume_fab.host.facts import compose, docker
    out = (f"echo '== engine'; {docker.ENGINE_COMMAND}\n"
           f"echo '== compose'; {compose.VERSION_COMMAND}\n"
           "echo '== envhash'; grep '^CFAB_' .env\n")
    if h.role == "app":
        out += f"echo '== redis_port'; {docker.published_port(spec.project, 'redis', spec.redis_port)}\n"
    return out


def status_script(h: HostInfo, spec: LabSpec, full: bool = True) -> str:
    """The reads of `invoke status` for one host. `full`: every read the tool does (the floor the
    targets use); else only the essential ones (containers, deployed.json, GPU, Redis, queue
    manager, device, probe)."""
    out = _head(h) + (_status_extras(h, spec) if full else "") + _containers(spec) + _deployed_gpu() + _auth()
    if h.role == "app":
        cmds = "ZCARD queue:pending\nZCARD queue:running\n" + "".join(
            f"TTL worker:{w}:heartbeat\n" for w in spec.worker_ids)
        out += (f"echo '== queue'; printf {shlex.quote(cmds)} | redis-cli --no-auth-warning -h {spec.app_ip} "
                f"-p {spec.redis_port} || exit 24\n")
    else:
        out += _redis_ping(spec)
        out += (f"echo '== queue-manager'; curl -fsS -m 3 http://{spec.app_ip}:{spec.qm_port}/health || exit 25\n"
                f"echo; echo '== device'; curl -fsS -m 3 http://127.0.0.1:{spec.comfyui_port}/system_stats "
                f">/dev/null && echo 'system_stats ok' || exit 26\n")
        out += _probe(spec)
    return out + "echo '== done'\n"


# --- no-op start-all, by hand (three phases over one multiplexed connection per host) ----------

def _preflight() -> str:
    """The tool's own preflight command lines (comfyume_fab.host.state.preflight_parts), one after
    the other, failing on a missing engine or Compose."""
    from comfyume_fab.host.state import preflight_parts
    out = "echo '== preflight'\n"
    for name, snippet in preflight_parts():
        out += f"{{ {snippet} ; }}" + (" || exit 30\n" if name in ("engine", "compose") else " 2>&1; true\n")
    return out


def _converge(h: HostInfo, spec: LabSpec) -> str:
    """Up to date (upload marker + every service running, healthy, right env label)? Else compose up."""
    files = " ".join(f"-f {f}" for f in spec.compose_files[h.name])
    checks = " && ".join(
        f"echo \"$st\" | grep -q '^/{spec.project}-{svc}-1 running \\(healthy\\)\\? *[0-9]* {h.service_hashes[svc]}$'"
        for svc in h.services)
    st = (f"ids=$(docker ps -aq --filter label=com.docker.compose.project={spec.project}); "
          f"st=$([ -z \"$ids\" ] || docker inspect --format {shlex.quote(INSPECT)} $ids)")
    uploaded = f"$(cat uploaded.sha256 2>/dev/null; sha256sum -- {' '.join(h.files)} 2>/dev/null)"
    return (f"echo '== converge'\n{st}\n"
            f"if [ \"{uploaded}\" = {shlex.quote(h.uploaded)} ] && {checks}; then echo unchanged; "
            f"else docker compose -p {spec.project} --env-file .env {files} up -d --no-color --quiet-pull "
            f"--remove-orphans {' '.join(h.services)} || exit 32; echo CHANGED; fi\n")


def start_phase1_app(h: HostInfo, spec: LabSpec) -> str:
    lock = ("mkdir .deploy-lock 2>/dev/null && echo bench-floor > .deploy-lock/info "
            "|| { echo 'LOCKED'; exit 33; }\n")
    return _head(h) + _preflight() + lock + _converge(h, spec)


def start_phase1_worker(h: HostInfo, spec: LabSpec) -> str:
    return _head(h) + _preflight()


def start_phase2_worker(h: HostInfo, spec: LabSpec) -> str:
    return _head(h) + _auth() + _redis_ping(spec) + _converge(h, spec) + _probe(spec) + _record(h, spec)


def start_phase3_app(h: HostInfo, spec: LabSpec) -> str:
    return _head(h) + _record(h, spec) + "rm -rf .deploy-lock\n"


def write_floor_scripts(spec: LabSpec, out: Path) -> Path:
    """out/status/<host>.sh and out/start/{1,2,3}/<host>.sh for floor.sh."""
    for sub in ("status", "status-min", "start/1", "start/2", "start/3"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for f in (out / sub).glob("*.sh"):
            f.unlink()
    for h in spec.hosts:
        (out / "status" / f"{h.name}.sh").write_text(status_script(h, spec))
        (out / "status-min" / f"{h.name}.sh").write_text(status_script(h, spec, full=False))
        if h.role == "app":
            (out / "start/1" / f"{h.name}.sh").write_text(start_phase1_app(h, spec))
            (out / "start/3" / f"{h.name}.sh").write_text(start_phase3_app(h, spec))
        else:
            (out / "start/1" / f"{h.name}.sh").write_text(start_phase1_worker(h, spec))
            (out / "start/2" / f"{h.name}.sh").write_text(start_phase2_worker(h, spec))
    return out


# --- Ansible ----------------------------------------------------------------------------------

def write_ansible_inventory(spec: LabSpec, lab_dir: Path, out: Path) -> Path:
    """A YAML inventory of the same hosts; each host's status script is a host variable marked
    !unsafe (its docker format strings must not be templated)."""
    lines = ["all:", "  vars:",
             f"    ansible_ssh_private_key_file: {lab_dir / 'id_ed25519'}",
             f"    ansible_ssh_common_args: \"-o UserKnownHostsFile={lab_dir / 'known_hosts'} "
             "-o StrictHostKeyChecking=yes\"", "  hosts:"]
    for h in spec.hosts:
        lines += [f"    {h.name}:", f"      ansible_host: {h.address}", f"      ansible_user: {h.user}",
                  f"      cfab_script: !unsafe {json.dumps(status_script(h, spec))}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
