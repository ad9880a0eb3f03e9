"""Test support shared by every suite: processes the tests start and stop, and one real socket client.

- `ManagedProcess`: one way to stop anything a test started (a server, a
  redis-server, nginx): a signal, a wait, then SIGKILL if it lingers.
- `LiveServer`: `manage.py serve` (or `runserver`) on a free port, sharing the
  test database; the fixtures in conftest.py start and stop it.
- `Socket`: a real WebSocket client speaking the protocol's JSON frames.

Nothing here is collected as tests (pytest collects `test_*.py`).
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

BASE_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving_asgi(app, *, ws="websockets-sansio", deflate=False, server_class=None):
    """`app` on uvicorn in this event loop, configured as `manage.py serve` does: `ws` its
    WebSocket protocol (uvicorn's sans-I/O one unless the server's own subclass is given),
    compression off unless `deflate`. Yields (server, its ws:// URL)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        ws=ws,
        ws_per_message_deflate=deflate,
        log_config=None,
        log_level="warning",
    )
    server = (server_class or uvicorn.Server)(config)
    task = asyncio.ensure_future(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield server, f"ws://127.0.0.1:{config.port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def wait_until(ready, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(interval)


def database_url_of(settings_dict) -> str:
    """A DATABASE_URL naming the test database this process uses."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


class ManagedProcess:
    """A process a test started: `stop()` ends it (SIGTERM, or `sig`), SIGKILL if it lingers."""

    process: subprocess.Popen | None = None

    def stop(self, sig=None, *, timeout: float = 10) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(sig or signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.stopped()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def stopped(self) -> None:
        """What to release once the process is gone (subclasses: log files, directories)."""


def cluster_port() -> int:
    """A free port for a cluster node, its bus port (+10000) free too. Both below the kernel's
    ephemeral range (32768 and up), where any socket's outgoing connection could take one
    between this check and the node's start."""
    import random

    for _ in range(1000):
        port = random.randint(20000, 22767)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    """A Redis Cluster of its own on free ports (`masters` masters, each with `replicas`
    replicas): `redis-server --cluster-enabled yes` per node, joined by `redis-cli --cluster
    create`. Nothing is persisted; `stop()` ends every node and removes their directory. Used by
    the cluster-mode tests and by `make bench` (its `cluster3` configuration)."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000):
        import tempfile

        self.ports = [cluster_port() for _ in range(masters * (1 + replicas))]
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="biogram-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def nodes(self) -> str:
        """The REDIS_CLUSTER_NODES value for this cluster."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start_node(self, port: int) -> bool:
        """Start the node on `port`; False when it could not (the port was taken meanwhile)."""
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(self.node_timeout_ms)),
                # A replica fails over however long ago it last heard its master (the default
                # refuses when a busy machine delayed it), as a test or benchmark needs.
                *("--cluster-replica-validity-factor", "0"),
                *("--save", "", "--appendonly", "no", "--dir", str(node_dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.processes[port]
        wait_until(
            lambda: process.poll() is not None or self.cli(port, "PING") == "PONG",
            timeout=10,
            what=f"redis {port}",
        )
        if process.poll() is not None:
            del self.processes[port]
            return False
        return True

    def cli(self, port: int, *command: str, timeout: float = 10) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(port), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.stdout.strip()

    def start(self) -> "RedisCluster":
        try:
            for index, port in enumerate(self.ports):
                for _ in range(5):
                    if self.start_node(port):
                        break
                    port = self.ports[index] = cluster_port()  # taken meanwhile: another
                else:
                    raise RuntimeError(f"no Redis Cluster node could start (last port {port})")
            created = subprocess.run(
                [
                    *("redis-cli", "--cluster", "create"),
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-800:]}")
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def info(self, port: int) -> dict[str, str]:
        lines = self.cli(port, "CLUSTER", "INFO").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def wait_healthy(self, timeout: float = 60) -> None:
        """Every running node says cluster_state:ok and sees every slot served, and every replica
        has its master's data (a replica that never synced would not take over)."""

        def healthy() -> bool:
            for port, process in self.processes.items():
                if process.poll() is not None:
                    continue
                info = self.info(port)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
                replication = self.cli(port, "INFO", "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False
            return True

        wait_until(healthy, timeout=timeout, what="the Redis Cluster to be healthy", interval=0.2)

    def node_table(self) -> list[dict]:
        """CLUSTER NODES as dicts: id, port, role (master/slave), master id, slots (ranges)."""
        alive = next(p for p, proc in self.processes.items() if proc.poll() is None)
        rows = []
        for line in self.cli(alive, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            rows.append(
                {
                    "id": parts[0],
                    "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                    "role": "master" if "master" in parts[2] else "slave",
                    "failed": "fail" in parts[2],
                    "master": parts[3],
                    "slots": parts[8:],
                }
            )
        return rows

    def masters_ports(self) -> list[int]:
        return sorted(
            r["port"] for r in self.node_table() if r["role"] == "master" and not r["failed"]
        )

    def kill(self, port: int) -> None:
        """SIGKILL one node (its replica is promoted after the node timeout)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def stop(self) -> None:
        import shutil

        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class LiveServer(ManagedProcess):
    """A `manage.py serve` process on a free port, sharing the test database (`runserver=True`:
    Django's development server on daphne instead, as `make dev` runs it)."""

    def __init__(self, env_overrides=None, *, runserver: bool = False):
        from django.db import connection

        self.port = free_port()
        self.command = (
            ["manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"]
            if runserver
            else ["manage.py", "serve"]
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_of(connection.settings_dict),
            "SECRET_KEY": settings.SECRET_KEY,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # Its own process per server: only the tests of notifications ask for it.
            "NOTIFIER_ENABLED": "0",
            **{name: str(value) for name, value in (env_overrides or {}).items()},
        }
        self.log_path = Path(settings.VAR_DIR) / f"live-{self.port}.log"
        self.log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> "LiveServer":
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stopped()
        self.process = subprocess.Popen(
            [sys.executable, *self.command],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stopped(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)


class Socket:
    """A real WebSocket client speaking the protocol's JSON frames."""

    def __init__(self, connection):
        self.connection = connection
        self.connect_frame: dict | None = None

    @classmethod
    async def open(
        cls, ws_url: str, token: str | None = None, *, query=None, path="/ws/chat/", origin=None
    ) -> "Socket":
        """Connect; with a token (and no query of the test's own), after the `connect` frame."""
        if query is None:
            query = f"token={quote(token)}" if token is not None else ""
        connection = await ws_connect(
            f"{ws_url}{path}?{query}" if query else f"{ws_url}{path}",
            origin=origin,
            open_timeout=5,
            close_timeout=1,
            max_queue=None,
        )
        socket = cls(connection)
        if token is not None and "token=" in query:
            socket.connect_frame = await socket.receive()
            if socket.connect_frame["type"] != "connect":
                await socket.close()
                raise AssertionError(f"expected connect, got {socket.connect_frame}")
        return socket

    async def send(self, frame_type: str, **data) -> None:
        await self.connection.send(json.dumps({"type": frame_type, "data": data}))

    async def send_raw(self, text: str) -> None:
        await self.connection.send(text)

    async def receive(self, within: float = 5) -> dict:
        return json.loads(await asyncio.wait_for(self.connection.recv(), within))

    async def receive_type(self, frame_type: str, within: float = 5, **match) -> dict:
        """The next frame of `frame_type` whose data has `match`'s values, skipping others."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {frame_type} frame {match or ''} within {within}s")
            frame = await self.receive(within=left)
            if frame["type"] == frame_type and all(
                frame["data"].get(key) == value for key, value in match.items()
            ):
                return frame

    async def frames_within(self, seconds: float) -> list[dict]:
        """Every frame that arrives in the next `seconds`."""
        frames = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(await self.receive(within=left))
            except TimeoutError:
                break
        return frames

    async def frames_until_closed(self, within: float = 5) -> tuple[list[dict], int | None]:
        """Every frame the server sends until it closes, and the close code it sent."""
        frames = []
        deadline = time.monotonic() + within
        while True:
            try:
                frames.append(await self.receive(within=max(0.01, deadline - time.monotonic())))
            except ConnectionClosed as closed:
                return frames, closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.connection.close()


async def send_and_ack(socket: Socket, chat_id, client_message_id: str, within: float = 5) -> dict:
    """Send a message (its text is its clientMessageId) and wait for the server's echo of it;
    the stored message object."""
    await socket.send(
        "message", chatId=str(chat_id), text=client_message_id, clientMessageId=client_message_id
    )
    while True:
        frame = await socket.receive_type("message", within=within)
        if frame["data"]["message"]["clientMessageId"] == client_message_id:
            return frame["data"]["message"]
