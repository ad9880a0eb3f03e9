"""Helpers of the cluster tests: a Redis and a PostgreSQL of the test's own, server pairs, real clients.

Nothing here touches the machine's PostgreSQL or Redis: the Redis is a
`redis-server` on a free port, the outage's PostgreSQL a cluster made by
`initdb` under a temporary directory, and both are stopped and removed by the
test that made them.
"""

import contextlib
import itertools
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings

from conftest import PASSWORD
from messaging.testing import (  # noqa: F401 - Socket and send_and_ack re-exported
    BASE_DIR,
    LiveServer,
    ManagedProcess,
    Socket,
    free_port,
    send_and_ack,
    wait_until,
)

NGINX_TEMPLATE = BASE_DIR / "deploy" / "nginx.conf"


# The marks of a test that runs server processes of its own on PostgreSQL with a Redis of its own.
CLUSTER_TEST = [
    pytest.mark.live,
    pytest.mark.cluster,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="cluster tests need DATABASE_URL on PostgreSQL (make test's second pass)",
    ),
    pytest.mark.skipif(
        shutil.which("redis-server") is None, reason="redis-server is not installed"
    ),
]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- Redis


class RedisServer(ManagedProcess):
    """A redis-server of the test's own on a free port; nothing persisted, so a restart empties it."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", tempfile.gettempdir()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stopped(self) -> None:
        self.process = None


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    """The newest PostgreSQL's bin directory with initdb and pg_ctl, if installed."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for path in reversed(candidates):
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster: initdb under a temporary directory, on a free port.

    initdb refuses to run as root, so as root the cluster belongs to the
    `postgres` system user and its commands run through `runuser`.
    """

    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="biogram-pg-"))
        self.data = self.dir / "data"
        self.owner = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")

    def init(self) -> "PostgresCluster":
        if self.owner:
            account = pwd.getpwnam(self.owner)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.run(
            "initdb",
            *("-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            *("--no-sync", "--no-instructions"),
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            "pg_ctl",
            *("-D", str(self.data), "-l", str(self.dir / "server.log")),
            *("-o", options, "-w", "-t", "30", "start"),
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(database_url: str) -> None:
    """`manage.py migrate` against another database than the test's."""
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed: {result.stdout}{result.stderr}")


# ---------------------------------------------------------------- server processes


def start_servers(count: int, env: dict) -> list[LiveServer]:
    """`count` server processes with the same settings, started side by side."""
    servers = [
        LiveServer(env_overrides={key: str(value) for key, value in env.items()})
        for _ in range(count)
    ]
    with ThreadPoolExecutor(count) as pool:
        started = [pool.submit(server.start) for server in servers]
        try:
            for future in started:
                future.result()
        except Exception:
            stop_servers(servers)
            raise
    return servers


def stop_servers(servers: list[LiveServer]) -> None:
    for server in servers:
        server.stop()
        server.remove_log()


def process_of(socket: "Socket") -> str:
    """Which process holds a socket: its connection id starts with that process's random prefix."""
    return socket.connect_frame["data"]["connectionId"].rsplit("-", 1)[0]


# ---------------------------------------------------------------- clients


def order_problem(seqs: list[int], count: int) -> str | None:
    """None when `seqs` is exactly 1..count; else a short description of what is wrong."""
    if seqs == list(range(1, count + 1)):
        return None
    missing = sorted(set(range(1, count + 1)) - set(seqs))
    inversions = [(a, b) for a, b in itertools.pairwise(seqs) if b <= a]
    return (
        f"received {len(seqs)} of {count}; missing {missing[:10]}"
        f"{'…' if len(missing) > 10 else ''} ({len(missing)}); {len(inversions)} out-of-order"
        f" pairs, first {inversions[:5]}"
    )


# ---------------------------------------------------------------- HTTP


def call(
    base_url: str, method: str, path: str, body=None, *, token: str | None = None
) -> tuple[int, dict | None]:
    """A REST call; (status, JSON body or None for another body), errors included."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base_url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class AdminSession:
    """A moderator logged into the Django admin of one server process, as a browser would be."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def csrf(self) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == "csrftoken")

    def post(self, path: str, fields: list[tuple[str, str]]) -> tuple[str, str]:
        """POST a form (following the redirect); the final URL and the page."""
        data = urlencode([*fields, ("csrfmiddlewaretoken", self.csrf())]).encode()
        with self.opener.open(f"{self.base_url}{path}", data=data, timeout=10) as response:
            return response.geturl(), response.read().decode()

    def login(self, username: str, password: str = PASSWORD) -> "AdminSession":
        self.opener.open(f"{self.base_url}/admin/login/", timeout=10).read()
        url, page = self.post(
            "/admin/login/",
            [("username", username), ("password", password), ("next", "/admin/")],
        )
        if not url.endswith("/admin/"):
            raise AssertionError(f"admin login failed: {page[:500]}")
        return self

    def run_action(self, changelist: str, action: str, *ids) -> str:
        """Run a changelist action on rows `ids`; the page shown after (with its message)."""
        _, page = self.post(
            changelist,
            [("action", action), ("index", "0"), *(("_selected_action", str(i)) for i in ids)],
        )
        return page


# ---------------------------------------------------------------- nginx


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None,
    )


def render_nginx_conf(*, listen: int, upstream_ports: list[int], run_dir: Path) -> str:
    """deploy/nginx.conf with its placeholders filled, as deploy/cluster.sh fills them."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in upstream_ports
    )
    return (
        NGINX_TEMPLATE.read_text()
        .replace("@LISTEN@", str(listen))
        .replace("        @UPSTREAM_SERVERS@", servers)
        .replace("@RUN_DIR@", str(run_dir))
    )


class Nginx(ManagedProcess):
    """nginx with deploy/nginx.conf in front of some server processes, under a temporary prefix."""

    def __init__(self, upstream_ports: list[int]):
        self.binary = nginx_binary()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="biogram-nginx-"))
        # Workers started by root run as `nobody`: they must reach the temp directories.
        self.dir.chmod(0o755)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(listen=self.port, upstream_ports=upstream_ports, run_dir=self.dir)
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        self.process = subprocess.Popen(
            [
                self.binary,
                *("-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")),
                *("-g", "daemon off;"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            return port_open(self.port)

        wait_until(listening, timeout=10, what="nginx")
        return self

    def stopped(self) -> None:
        self.process = None

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
