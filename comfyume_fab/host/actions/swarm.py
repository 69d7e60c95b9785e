"""Docker Swarm changes: init the manager, join a worker (its token on stdin only), label and remove
nodes, deploy the stack without resolving or pulling images, scale a service. Command builders only;
`ops.swarm` runs them. Every value is quoted once, here.

The join token never reaches an argv: `docker swarm join` takes it only as `--token`, so a worker
joins through the engine's own API (`POST /swarm/join`, the same request the CLI sends) with the
JSON body, token inside, read by curl from stdin on the worker host.
"""
from __future__ import annotations

import json
import shlex

from ..commands import q, workdir_path
from ..facts.swarm import HOST_LABEL, ROLE_LABEL

SWARM_PORT = 2377
STACK_FILE = "stack.yml"
SECRETS_DIR = "swarm-secrets"


def init(ip: str) -> str:
    """The app host becomes the manager, advertising and carrying data on its tailnet address."""
    return shlex.join(["docker", "swarm", "init", "--advertise-addr", ip, "--data-path-addr", ip,
                       "--listen-addr", f"{ip}:{SWARM_PORT}"])


JOIN_TOKEN = "docker swarm join-token -q worker"  # on the manager; its output is kept in memory only

# The engine's socket: DOCKER_HOST when it names a unix socket, else Docker's default.
_SOCKET = 'cfab_sock=/var/run/docker.sock; case "${DOCKER_HOST:-}" in unix://*) cfab_sock="${DOCKER_HOST#unix://}";; esac'
# POST /swarm/join with the body from stdin; prints the HTTP code last (200: joined).
JOIN = (f"{_SOCKET}; curl -sS --max-time 60 --unix-socket \"$cfab_sock\" -H 'Content-Type: application/json' "
        "--data-binary @- -w '\\n%{http_code}\\n' http://localhost/swarm/join")


def join_body(token: str, manager_ip: str, ip: str) -> bytes:
    """The body of POST /swarm/join (the engine API's SwarmJoinRequest): this host's tailnet address
    as advertise and data-path address, the manager's as the remote. Goes to JOIN on stdin."""
    return json.dumps({"ListenAddr": f"0.0.0.0:{SWARM_PORT}", "AdvertiseAddr": ip, "DataPathAddr": ip,
                       "RemoteAddrs": [f"{manager_ip}:{SWARM_PORT}"], "JoinToken": token}).encode()


def join_result(output: str) -> tuple[bool, str]:
    """(joined?, what the engine said) from JOIN's output."""
    lines = output.strip().splitlines()
    code = lines[-1].strip() if lines else ""
    body = "\n".join(lines[:-1]).strip()
    try:
        said = json.loads(body).get("message", body) if body else ""
    except (ValueError, AttributeError):
        said = body
    return code == "200", said or (f"HTTP {code}" if code else "no answer from the engine's API")


def label(node_id: str, role: str, host: str) -> str:
    return shlex.join(["docker", "node", "update", "--label-add", f"{ROLE_LABEL}={role}",
                       "--label-add", f"{HOST_LABEL}={host}", node_id])


def remove_node(node_id: str, force: bool = False) -> str:
    return shlex.join(["docker", "node", "rm", *(["--force"] if force else []), node_id])


def deploy(workdir: str, stack: str) -> str:
    """`docker stack deploy` of the uploaded stack file: images as named (no registry lookup, no pull),
    services no longer in the file removed."""
    return (f"cd {q(workdir_path(workdir))} && "
            + shlex.join(["docker", "stack", "deploy", "--resolve-image", "never", "--prune",
                          "-c", STACK_FILE, stack]))


def config(workdir: str) -> str:
    """`docker stack config`: the stack file as the CLI reads it (a check, changes nothing)."""
    return f"cd {q(workdir_path(workdir))} && " + shlex.join(["docker", "stack", "config", "-c", STACK_FILE])


def scale(service: str, replicas: int) -> str:
    return shlex.join(["docker", "service", "scale", "--detach", f"{service}={replicas}"])


def secrets_dir(workdir: str) -> str:
    path = workdir_path(workdir, SECRETS_DIR)
    return f"{shlex.join(['mkdir', '-p', '-m', '700', path])} && {shlex.join(['chmod', '700', path])}"
