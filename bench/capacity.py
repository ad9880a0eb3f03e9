#!/usr/bin/env python3
"""How many server processes, Redis shards and database nodes a load needs (docs/scaling.md).

Two commands:

    python bench/capacity.py measure [--bench FILE] [--output docs/bench/capacity.json]
    python bench/capacity.py plan --users 1000000 --messages 50000 --chat-size 10

`measure` takes three kinds of figures on this machine and writes them to one JSON file:

- per server process, from a `make bench` result (`--bench`, the newest with a `pg1` run):
  deliveries/s at the highest passing rate, idle memory per connection, connects/s;
- per Redis shard: SPUBLISH/s of an event-sized payload to 1, 3 and 6 subscribed processes,
  on a redis-server of its own (`redis-benchmark`, pipelined; the subscribers count the bytes
  they receive, so a figure nobody received is an error, not a result);
- per PostgreSQL core: messages stored/s through `services.store_messages` (the socket path's
  group commit) and read positions moved/s through `services.mark_read`, from writer threads
  on a throwaway database, divided by the CPU PostgreSQL's processes used meanwhile.

`plan` turns a load (concurrent users, messages/s, chat size, share of members online) into
processes, shards and nodes, each sized to run at `--headroom` (default 0.5) of what was
measured, and says which limit decides each number.
"""

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import CLK_TCK, PY, free_port, log, machine_info, manage, pg_admin  # noqa: E402

DEFAULT_OUTPUT = ROOT / "docs" / "bench" / "capacity.json"
# A message event as the layer publishes it between processes: the envelope and a message frame.
EVENT_BYTES = 420
SUBSCRIBER_COUNTS = (1, 3, 6)


# ---------------------------------------------------------------- per process (from make bench)


def newest_bench_with_pg1() -> Path | None:
    for path in sorted((ROOT / "docs" / "bench").glob("*.json"), reverse=True):
        with contextlib.suppress(Exception):
            if any(r.get("config") == "pg1" for r in json.loads(path.read_text())["results"]):
                return path
    return None


def process_figures(bench_file: Path) -> dict:
    """Per-process figures of the `pg1` run (PostgreSQL + Redis, one process) of a bench result."""
    document = json.loads(bench_file.read_text())
    (pg1,) = [r for r in document["results"] if r.get("config") == "pg1"]
    best = pg1["search"]
    if best.get("maxRate") is None and pg1["steady"]["passed"]:
        # No step of the search passed (a busy machine): the steady step is what passed.
        best = {
            "maxRate": pg1["steady"]["targetRate"],
            "maxDeliveriesPerSec": pg1["steady"]["deliveredPerSec"],
        }
    connect = pg1["connect"]
    return {
        "source": str(bench_file.resolve().relative_to(ROOT)),
        "commit": document["machine"].get("commit"),
        "deliveriesPerSecond": best["maxDeliveriesPerSec"],
        "messagesPerSecond": best["maxRate"],
        "kbPerConnection": connect["idleKBPerConnection"],
        "baseRssMB": round(connect["rssBeforeKB"] / 1024, 1),
        "connectsPerSecond": round(connect["connected"] / connect["connectS"], 1),
    }


def with_inbound(process: dict, redis: dict) -> dict:
    return {**process, "inboundPerSecond": redis["processInboundPerSecond"]}


# ---------------------------------------------------------------- per Redis shard


class Subscriber(threading.Thread):
    """A raw connection SSUBSCRIBEd to one shard channel, counting the bytes it receives."""

    def __init__(self, port: int, channel: str):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        command = f"*2\r\n$10\r\nSSUBSCRIBE\r\n${len(channel)}\r\n{channel}\r\n"
        self.sock.sendall(command.encode())
        self.sock.recv(4096)  # the confirmation
        self.received = 0
        self.start()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(1 << 20):
                self.received += len(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def redis_benchmark_rate(output: str) -> float:
    """requests/s from `redis-benchmark -q` output ("SPUBLISH …: 123456.79 requests per second")."""
    for line in output.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            return float(line.split(":")[-1].split("requests")[0].strip())
    raise RuntimeError(f"redis-benchmark printed no rate: {output[-300:]!r}")


def measure_redis(requests: int) -> dict:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="biogram-capacity-redis-")
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            # A subscriber slower than redis-benchmark would be cut off at the default 32 MB.
            "--client-output-buffer-limit",
            "pubsub 0 0 0",
        ],
        stdout=subprocess.DEVNULL,
    )
    results = []
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        channel = "{bq}biogram:part:0"
        payload = "x" * EVENT_BYTES
        for count in SUBSCRIBER_COUNTS:
            subscribers = [Subscriber(port, channel) for _ in range(count)]
            try:
                done = subprocess.run(
                    [
                        "redis-benchmark",
                        "-p",
                        str(port),
                        "-c",
                        "4",
                        "-P",
                        "32",
                        "-q",
                        "-n",
                        str(requests),
                        "SPUBLISH",
                        channel,
                        payload,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
                rate = redis_benchmark_rate(done.stdout)
                expected = requests * EVENT_BYTES
                deadline = time.monotonic() + 30
                while (
                    time.monotonic() < deadline and min(s.received for s in subscribers) < expected
                ):
                    time.sleep(0.1)
                received = min(s.received for s in subscribers)
                if received < expected:
                    raise RuntimeError(
                        f"a subscriber received {received} of at least {expected} bytes"
                    )
            finally:
                for subscriber in subscribers:
                    subscriber.close()
            results.append({"subscribers": count, "publishesPerSecond": round(rate)})
            log(f"redis: {count} subscriber(s): {rate:,.0f} SPUBLISH/s")
        inbound = measure_inbound(port, requests // 2)
    finally:
        server.terminate()
        server.wait(10)
    # Cost of one publish = a + b * subscribers (seconds of the shard's one thread), fitted.
    xs = [r["subscribers"] for r in results]
    ys = [1 / r["publishesPerSecond"] for r in results]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    a = mean_y - b * mean_x
    return {
        "payloadBytes": EVENT_BYTES,
        "requests": requests,
        "steps": results,
        "secondsPerPublish": a,
        "secondsPerSubscriber": b,
        "processInboundPerSecond": inbound,
    }


async def _consume(port: int, channel: str, count: int) -> float:
    """Receive `count` events as a server process does (redis-py's asyncio pub/sub, orjson,
    a look-up of the group); returns the seconds from the first to the last."""
    import asyncio

    import orjson
    import redis.asyncio as redis

    client = redis.Redis(port=port)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    groups: dict[str, None] = {}
    seen, first = 0, None

    async def receive() -> None:
        nonlocal seen, first
        while seen < count:
            # As the server's RedisSubscriber reads (None: the ignored subscribe confirmation).
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            first = first or time.perf_counter()
            envelope = orjson.loads(message["data"])
            groups.get(envelope["g"])  # an event for a chat with no member here is dropped
            seen += 1

    try:
        await asyncio.wait_for(receive(), 60)
    except TimeoutError:
        raise RuntimeError(f"the subscriber received {seen} of {count} events") from None
    await pubsub.aclose()
    await client.aclose()
    return time.perf_counter() - first


def measure_inbound(port: int, count: int) -> int:
    """Events/s one process can take in from Redis, when it has a member in none of their chats
    (with every process subscribed to every partition, each receives every event)."""
    import asyncio

    channel = "{bq}biogram:part:1"
    payload = '{"o":"other","g":"chat-1","m":{"type":"chat.frame","text":"' + "x" * 340 + '"}}'

    async def run() -> float:
        consumer = asyncio.ensure_future(_consume(port, channel, count))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(
            subprocess.run,
            [
                "redis-benchmark",
                "-p",
                str(port),
                "-c",
                "1",
                "-P",
                "16",
                "-q",
                "-n",
                str(count),
                "PUBLISH",
                channel,
                payload,
            ],
            capture_output=True,
            check=True,
        )
        return await consumer

    seconds = asyncio.run(run())
    rate = round(count / seconds)
    log(f"redis: one process takes in {rate:,} events/s")
    return rate


# ---------------------------------------------------------------- per PostgreSQL core


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (here: the PostgreSQL backend serving one connection)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pg_worker(data_file: str, seconds: float, threads: int, batch: int, kind: str) -> None:
    """In a child process with DATABASE_URL set: store messages (or move read positions) from
    `threads` threads for `seconds`; print the count and the CPU seconds their PostgreSQL
    backends used (read from /proc: the database runs on this machine) as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "biogram.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from messaging import services

    entries = json.loads(Path(data_file).read_text())["users"]
    users = {
        u.pk: u for u in get_user_model().objects.filter(pk__in=[int(e["userId"]) for e in entries])
    }
    pairs = [(users[int(e["userId"])], int(e["chatId"])) for e in entries]
    counts = [0] * threads
    backend_cpu = [0.0] * threads
    stop = time.monotonic() + seconds

    def run(index: int) -> None:
        mine = pairs[index::threads]
        step = 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        started = process_cpu_seconds(backend)
        while time.monotonic() < stop:
            if kind == "store":
                chunk = [mine[(step + i) % len(mine)] for i in range(batch)]
                step += batch
                outgoing = [services.Outgoing(u, c, "capacity", None, None) for u, c in chunk]
                with services.publish_order:
                    results = services.store_messages(outgoing)
                counts[index] += sum(1 for r in results if isinstance(r, tuple))
            else:
                user, chat_id = mine[step % len(mine)]
                step += 1
                services.mark_read(user=user, chat_id=chat_id)
                counts[index] += 1
        backend_cpu[index] = process_cpu_seconds(backend) - started
        connection.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"count": sum(counts), "seconds": seconds, "postgresCpu": sum(backend_cpu)}))


def measure_postgres(pg_url: str, seconds: float) -> dict:
    database = f"biogram_capacity_{os.getpid()}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}},
        "DATABASE_URL": f"{pg_url}/{database}",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "0",
    }
    data = Path(tempfile.mkdtemp(prefix="biogram-capacity-pg-")) / "data.json"
    out = {}
    pg_admin(pg_url, f'CREATE DATABASE "{database}"')
    try:
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "benchdata", "--users=2000", "--chat-size=10", f"--output={data}")
        for kind, threads, batch in (("store", 4, 32), ("read", 4, 1)):
            # Warm up once (connections, caches), then measure.
            for length in (2.0, seconds):
                done = subprocess.run(
                    [
                        PY,
                        __file__,
                        "pg-worker",
                        str(data),
                        str(length),
                        str(threads),
                        str(batch),
                        kind,
                    ],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rate = figures["count"] / length
            pg_cores = figures["postgresCpu"] / length
            out[kind] = {
                "threads": threads,
                "batch": batch,
                "perSecond": round(rate),
                "postgresCores": round(pg_cores, 2),
                "perPostgresCore": round(rate / max(pg_cores, 0.01)),
            }
            log(f"postgres {kind}: {rate:,.0f}/s using {pg_cores:.2f} PostgreSQL cores")
    finally:
        with contextlib.suppress(Exception):
            pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return out


# ---------------------------------------------------------------- the plan


def plan(m: dict, args) -> dict:
    """Processes, Redis shards and database nodes for a load, each at `headroom` of measured."""
    h = args.headroom
    redis, pg = m["redis"], m["postgres"]
    proc = with_inbound(m["process"], redis)
    members_online = args.chat_size * args.online
    deliveries = args.messages * members_online
    events = args.messages * args.events_per_message

    # Every process takes in every event (it subscribes to every partition): that share of its
    # core is spent whatever the number of processes; what is left delivers.
    inbound_share = events / proc["inboundPerSecond"]
    spare = h - inbound_share
    by_cpu = deliveries / (spare * proc["deliveriesPerSecond"]) if spare > 0 else math.inf
    budget_kb = (args.process_memory_gb * 1024 - proc["baseRssMB"]) * 1024
    by_memory = args.users * proc["kbPerConnection"] / (h * budget_kb)
    by_storm = args.users / (h * proc["connectsPerSecond"] * args.reconnect_window)
    limits = {"deliveries": by_cpu, "memory": by_memory, "reconnect storm": by_storm}
    processes = max(1, math.ceil(max(limits.values()))) if spare > 0 else None

    # Every process subscribes to every partition: one publish costs a + b * processes.
    publish_cost = redis["secondsPerPublish"] + redis["secondsPerSubscriber"] * (processes or 0)
    shards = max(1, math.ceil(events * publish_cost / h))

    writes_cores = args.messages * (1 + args.changes) / pg["store"]["perPostgresCore"]
    reads_cores = args.messages * members_online * args.reads / pg["read"]["perPostgresCore"]
    cores = (writes_cores + reads_cores) / h
    nodes = max(1, math.ceil(cores / args.db_cores))
    return {
        "load": {
            "users": args.users,
            "messagesPerSecond": args.messages,
            "chatSize": args.chat_size,
            "online": args.online,
            "deliveriesPerSecond": round(deliveries),
            "eventsPerSecond": round(events),
        },
        "processes": processes,
        "inboundShare": round(inbound_share, 3),
        "processesBy": {k: round(v, 2) for k, v in limits.items()},
        "decidedBy": max(limits, key=limits.get),
        "connectionsPerProcess": math.ceil(args.users / processes) if processes else None,
        "redisShards": shards,
        "redisShardLoad": round(events * publish_cost / shards, 2),
        "postgresCores": round(cores, 1),
        "databaseNodes": nodes,
        "database": "one PostgreSQL primary"
        if nodes == 1
        else f"Citus: a coordinator and {nodes} workers, messages distributed by chat_id",
    }


def print_plan(result: dict) -> None:
    load = result["load"]
    print(
        f"{load['users']:,} users, {load['messagesPerSecond']:,} messages/s in chats of "
        f"{load['chatSize']} ({load['online']:.0%} online): {load['deliveriesPerSecond']:,} "
        f"deliveries/s, {load['eventsPerSecond']:,} events/s between processes"
    )
    if result["processes"] is None:
        print(
            f"  server processes: none suffices: taking in every event would use "
            f"{result['inboundShare']:.0%} of each process's core (docs/scaling.md: per-chat "
            "shard channels are the next step)"
        )
    else:
        by = ", ".join(f"{k} {v}" for k, v in result["processesBy"].items())
        print(
            f"  server processes: {result['processes']} (by {by}; decided by {result['decidedBy']})"
        )
        print(
            f"  connections per process: {result['connectionsPerProcess']:,}; taking in every "
            f"event uses {result['inboundShare']:.0%} of each process's core"
        )
    print(
        f"  Redis Cluster masters: {result['redisShards']} "
        f"(each at {result['redisShardLoad']:.0%} of its one thread)"
    )
    print(f"  database: {result['database']} ({result['postgresCores']} PostgreSQL cores busy)")


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("measure", help="take the measurements the plan is built on")
    measure.add_argument("--bench", type=Path, help="a make bench JSON with a pg1 run")
    measure.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    measure.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    measure.add_argument("--seconds", type=float, default=10)
    measure.add_argument("--redis-requests", type=int, default=400_000)
    p = sub.add_parser("plan", help="size a deployment for a load")
    p.add_argument("--measurements", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--users", type=int, default=1_000_000, help="concurrent connections")
    p.add_argument("--messages", type=float, default=20_000, help="messages sent per second")
    p.add_argument("--chat-size", type=float, default=10, help="members per chat, on average")
    p.add_argument("--online", type=float, default=0.5, help="share of a chat's members online")
    p.add_argument("--changes", type=float, default=0.2, help="edits/reactions per message")
    p.add_argument(
        "--reads", type=float, default=0.5, help="read positions moved per delivered message"
    )
    p.add_argument(
        "--events-per-message",
        type=float,
        default=3,
        help="events between processes per message (the message, reads, typing, changes)",
    )
    p.add_argument("--headroom", type=float, default=0.5, help="share of measured to run at")
    p.add_argument("--process-memory-gb", type=float, default=4)
    p.add_argument(
        "--reconnect-window", type=float, default=60, help="seconds for all to reconnect"
    )
    p.add_argument("--db-cores", type=int, default=16, help="cores per database node")
    p.add_argument("--json", action="store_true")
    worker = sub.add_parser("pg-worker")
    for name in ("data", "seconds", "threads", "batch", "kind"):
        worker.add_argument(name)
    args = parser.parse_args(argv)

    if args.command == "pg-worker":
        pg_worker(args.data, float(args.seconds), int(args.threads), int(args.batch), args.kind)
        return 0
    if args.command == "measure":
        bench = args.bench or newest_bench_with_pg1()
        if bench is None:
            parser.error("no make bench result with a pg1 run; pass --bench")
        document = {
            "machine": machine_info(),
            "process": process_figures(bench),
            "redis": measure_redis(args.redis_requests),
            "postgres": measure_postgres(args.pg_url, args.seconds),
        }
        document["machine"]["loadAverageAtEnd"] = os.getloadavg()[0]
        args.output.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {args.output}")
        return 0
    measurements = json.loads(args.measurements.read_text())
    result = plan(measurements, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_plan(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
