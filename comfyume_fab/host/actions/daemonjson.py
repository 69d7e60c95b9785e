"""The engine's GPU settings for Swarm (`engine: swarm` on a worker host with GPUs): what start-all
reads (`READ`: `nvidia-smi -L`, /etc/docker/daemon.json, the NVIDIA runtime's config.toml) and the
command that writes a new file (a timestamped backup of the old one kept beside it, written
atomically) and restarts the engine. Builders only; `plan.swarmgpu` decides what the files must say
and `ops.swarm` runs them only when something changed. Needs root: `sudo -n` unless the login is root.
"""
from __future__ import annotations

import shlex

from ..commands import sections
from ..facts.nvidia import LIST_COMMAND

DAEMON_JSON = "/etc/docker/daemon.json"
RUNTIME_TOML = "/etc/nvidia-container-runtime/config.toml"
_ROOT = 'if [ "$(id -u)" = 0 ]; then cfab_root=; else cfab_root="sudo -n"; fi'

READ = sections([("nvidia_list", LIST_COMMAND), ("daemon_json", f"cat {DAEMON_JSON} 2>/dev/null || true"),
                 ("runtime_toml", f"cat {RUNTIME_TOML} 2>/dev/null || true"),
                 ("nvidia_runtime", "command -v nvidia-container-runtime || true")])


def write_file(path: str, stamp: str) -> str:
    """Write stdin to `path` (root), keeping the old file as `path.comfyume-<stamp>`; atomic rename."""
    p, backup, tmp = shlex.quote(path), shlex.quote(f"{path}.comfyume-{stamp}"), shlex.quote(f"{path}.comfyume-new")
    return (f"{_ROOT}; $cfab_root mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && "
            f"{{ [ ! -e {p} ] || $cfab_root cp -p {p} {backup}; }} && $cfab_root tee {tmp} >/dev/null && "
            f"$cfab_root mv {tmp} {p}")


RESTART = (f"{_ROOT}; $cfab_root systemctl restart docker && "
           "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1")
