"""A real ``redis-server`` on loopback, and gateway replicas in this loop sharing it, for the quota
tests and ``hack/bench/quota.py``.

    with redis_server() as url:                                  # redis://127.0.0.1:<port>/0
        async with gateway_replicas(3, routes=..., keys=..., redis_url=url) as replicas:
            replicas[0].url, replicas[0].proxy.metrics
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from aima.gateway import KeyStore, Proxy, create_app, open_gateway
from aima.gateway.routes import Routes
from aima.settings import Settings
from aima_testenv.processes import Component, ProcessError, free_port, wait_until

__all__ = ["Replica", "gateway_replicas", "redis_server"]


@contextlib.contextmanager
def redis_server(*, timeout: float = 10.0) -> Iterator[str]:
    """A fresh redis-server (no persistence) on a free loopback port; its URL. Raises, never skips,
    when redis-server is not installed (``hack/setup`` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ProcessError("redis-server is not installed: run hack/setup (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aima-redis-") as folder:
        server = Component(
            name="redis-server",
            argv=[binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", folder],
            log_path=Path(folder) / "redis.log",
        )  # fmt: skip
        server.start()
        try:
            wait_until(
                f"redis-server on port {port}", lambda: _pongs(port), components=[server], timeout=timeout
            )
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.stop()


def _pongs(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


@dataclass(frozen=True)
class Replica:
    """One gateway replica: where it listens, and its proxy (metrics, quotas)."""

    url: str
    proxy: Proxy


@contextlib.asynccontextmanager
async def gateway_replicas(
    count: int, *, routes: Routes, keys: KeyStore, redis_url: str | None, **settings: object
) -> AsyncIterator[list[Replica]]:
    """``count`` gateway apps on their own loopback ports, with the same keys, counting quotas in
    ``redis_url`` (shared) or, without one, each in its own memory (today's per-pod counting)."""
    config = Settings.model_validate(
        {"gateway_quota_redis_url": SecretStr(redis_url) if redis_url else None, **settings}
    )
    async with contextlib.AsyncExitStack() as stack:
        replicas = []
        for _ in range(count):
            proxy = await stack.enter_async_context(open_gateway(config, kube=None, routes=routes, keys=keys))
            runner = web.AppRunner(create_app(proxy), access_log=None, handler_cancellation=True)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            replicas.append(Replica(url=f"http://127.0.0.1:{runner.addresses[0][1]}", proxy=proxy))
        yield replicas
