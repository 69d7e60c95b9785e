"""Cross-host links, each checked from the right vantage point, each a CheckResult; and the
one read of the job queue in Redis.

Redis and the queue manager are reached through a TCP connection that the WORKER host
opens (an SSH direct-tcpip channel), so a Redis bound to 127.0.0.1 or a firewall on the
tailnet shows up exactly as the worker would see it. Checks never raise for what they find:
they report every failure in one pass; only a broken SSH session raises.
"""
from __future__ import annotations

import dataclasses
import functools
import http.client
import json
import time
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import TunnelError
from ..host.ssh.remote import Remote
from .result import CheckResult

if TYPE_CHECKING:  # redis-py is imported lazily, when a check first needs it
    import redis

# redis-py is imported on first use (~60 ms: it loads its asyncio and cluster clients too), so
# a task can import it in the background while it connects (see `prefetch_redis`).


def prefetch_redis() -> None:
    """Import redis-py now (call it in a background thread while SSH connections open)."""
    _tunnel_connection_class()


@functools.lru_cache(maxsize=None)
def _tunnel_connection_class():
    import redis

    class _TunnelConnection(redis.Connection):
        """A redis-py connection whose socket is an SSH tunnel opened from another host."""

        def __init__(self, *, tunnel_socket, **kwargs):
            self._tunnel_socket = tunnel_socket
            super().__init__(**kwargs)

        def _connect(self):
            self._tunnel_socket.settimeout(self.socket_timeout)
            return self._tunnel_socket
    return _TunnelConnection


def redis_client(sock, password: str | None, timeout: float) -> "redis.Redis":
    import redis
    pool = redis.ConnectionPool(connection_class=_tunnel_connection_class(), tunnel_socket=sock, password=password,
                                socket_timeout=timeout, decode_responses=True, max_connections=1)
    return redis.Redis(connection_pool=pool, retry=None)


def redis_ping(via: Remote, host: str, port: int, password: str | None, timeout: float,
               name: str, app_host: str) -> CheckResult:
    """Authenticate and PING Redis at host:port with a connection that `via` opens."""
    import redis
    t0 = time.monotonic()

    def done(ok: bool, detail: str, **data) -> CheckResult:
        return CheckResult(name, ok, detail, time.monotonic() - t0, via.name, data=data)

    try:
        with via.tunnel(host, port, timeout) as sock:
            client = redis_client(sock, password, timeout)
            t1 = time.monotonic()
            client.ping()
            rtt = (time.monotonic() - t1) * 1000
            return done(True, f"{via.name} -> {host}:{port} PONG in {rtt:.1f} ms", rtt_ms=round(rtt, 1))
    except TunnelError as exc:
        if exc.kind == "refused":
            return done(False, f"nothing accepts connections on {host}:{port} as seen from {via.name}: Redis on "
                        f"{app_host} is bound to 127.0.0.1 or not running; set REDIS_BIND_IP to the tailnet "
                        f"address {host} (the planner does this for a remote worker) and rerun start-all",
                        diagnosis="refused")
        if exc.kind == "timeout":
            return done(False, f"no answer from {host}:{port} within {timeout:g} s as seen from {via.name}: the "
                        "tailnet or a firewall between the hosts drops the traffic (is tailscale up on both, "
                        "and did the app host's tailnet address change?)", diagnosis="timeout")
        return done(False, str(exc), diagnosis=exc.kind)
    except redis.AuthenticationError:
        return done(False, f"Redis at {host}:{port} rejected the password that {via.name} uses: REDIS_PASSWORD "
                    "differs between the hosts; rerun start-all to upload the same secret everywhere",
                    diagnosis="auth")
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return done(False, f"Redis at {host}:{port} refused authentication from {via.name}: {exc}",
                        diagnosis="auth")
        return done(False, f"Redis at {host}:{port} answered an error: {exc}", diagnosis="error")
    except redis.TimeoutError:
        return done(False, f"{host}:{port} accepted the connection but did not answer like Redis within "
                    f"{timeout:g} s: wrong host or port?", diagnosis="wrong-host")
    except (redis.ConnectionError, redis.RedisError) as exc:
        return done(False, f"{host}:{port} is not answering like Redis ({exc}): wrong host or port?",
                    diagnosis="wrong-host")


def http_via(via: Remote, host: str, port: int, method: str, path: str, body: Any = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request whose TCP connection `via` opens to host:port. Raises TunnelError,
    OSError (incl. socket.timeout) or http.client.HTTPException."""
    with via.tunnel(host, port, timeout) as sock:
        sock.settimeout(timeout)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()


QUEUE_PENDING, QUEUE_RUNNING = "queue:pending", "queue:running"


def heartbeat_key(worker_id: str) -> str:
    return f"worker:{worker_id}:heartbeat"


@dataclasses.dataclass(frozen=True)
class QueueState:
    pending: int
    running: int
    heartbeat_ttls: dict[str, int | None]  # worker id -> TTL of its heartbeat key (None/negative: absent)


def read_queue(via: Remote, host: str, port: int, password: str | None, timeout: float,
               worker_ids: Iterable[str] = ()) -> QueueState:
    """Pending and running job counts (and each worker's heartbeat TTL) from Redis at host:port,
    over a connection `via` opens. Raises TunnelError or a redis-py error."""
    with via.tunnel(host, port, timeout) as sock:
        r = redis_client(sock, password, timeout)
        pending, running = r.zcard(QUEUE_PENDING), r.zcard(QUEUE_RUNNING)
        ttls = {wid: r.ttl(heartbeat_key(wid)) for wid in worker_ids}
    return QueueState(pending, running, ttls)
