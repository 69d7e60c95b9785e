"""`exec mello redis -- redis-cli ping` answers PONG (issue 23, item 8): the Redis container gets
REDISCLI_AUTH from the same .env value as REDIS_PASSWORD, never on a command line.

Real components: the planned app host's files resolved by real Compose v2 (`docker compose config`,
no engine needed), and a real `redis-server` on a free loopback port that requires that password,
asked by a real `redis-cli` with exactly the environment Compose gives the redis service."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from comfyume_fab.inventory import load_inventory
from comfyume_fab.plan.planner import make_plan
from tests.support import inventory_text, render, salted

PASSWORD = "a p@ss word, with signs & such"


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on 127.0.0.1:<free port> requiring PASSWORD (read from a 0600 file)."""
    server = shutil.which("redis-server")
    if not server or not shutil.which("redis-cli"):
        pytest.fail("redis-server/redis-cli missing: run scripts/setup.sh as root, then rerun the tests")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\nrequirepass "{PASSWORD}"\nsave ""\nappendonly no\n'
                    f"dir {tmp_path}\n")
    conf.chmod(0o600)
    proc = subprocess.Popen([server, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(port: int, env: dict) -> str:
    res = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"], env={"PATH": "/usr/bin:/bin", **env},
                         capture_output=True, text=True, timeout=10)
    return (res.stdout + res.stderr).strip()


def test_redis_cli_in_the_redis_container_is_authenticated_from_the_env_file(tmp_path, redis_server):
    (tmp_path / "hosts.yaml").write_text(inventory_text("dual-server", "two"))
    inv = load_inventory(str(tmp_path / "hosts.yaml"), environ={"REDIS_PASSWORD": PASSWORD, "ADMIN_PASSWORD": "x"})
    app = salted(make_plan(inv)).app
    redis = render(tmp_path, app, inv.project)["services"]["redis"]
    env = {k: (v or "").replace("$$", "$") for k, v in redis["environment"].items()}
    assert env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"] == PASSWORD
    assert "REDISCLI_AUTH" not in str(redis["command"])  # never on a command line
    assert _ping(redis_server, {}).startswith("NOAUTH")  # what `redis-cli ping` answered before
    assert _ping(redis_server, {k: env[k] for k in ("REDISCLI_AUTH",)}) == "PONG"
