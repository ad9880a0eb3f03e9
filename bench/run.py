#!/usr/bin/env python3
"""`make bench`: start the server in a configuration, load it with bench/loadgen.js, report.

For each configuration asked for (and for the reference tutorial consumer,
unless --no-reference) this script:

1. makes a throw-away var dir (SQLite file, secret key) or PostgreSQL database,
   migrates it and creates two bench data sets with `manage.py benchdata`: one
   of --connect-users users for the connect/memory measurement, one of --users
   users for the load steps;
2. starts the server process(es) with rate limits off and WARNING logging;
3. opens all --connect-users connections, timing it, and reads the server's RSS
   with them open and idle (memory per connection = RSS growth / connections);
4. opens the --users connections and runs a steady step at --steady-rate, then
   the max-throughput search: raise the rate step by step and stop at the first
   step with p99 over --p99-limit or anything lost;
5. stops the servers (also on error or Ctrl-C), drops the database.

It prints a Markdown table of every figure with the ratio ours/reference and
writes everything to --output as JSON. See bench/README.md.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:  # run as `python bench/run.py`: the project's packages too
    sys.path.insert(0, str(ROOT))
PY = sys.executable
NODE = shutil.which("node") or "/usr/bin/node"
CLK_TCK = os.sysconf("SC_CLK_TCK")

DEFAULT_LADDER = (
    "500,1000,1500,2000,2500,3000,3500,4000,5000,6000,7000,8000,10000,12000,15000,20000"
)
CONFIGS = {
    "default": "SQLite + in-memory channel layer, one process",
    "pg1": "PostgreSQL + Redis, one process",
    "pg2": "PostgreSQL + Redis, two processes (chats span both)",
    "pg3": "PostgreSQL + Redis, three processes (chats span all three)",
    "cluster3": "PostgreSQL + a Redis Cluster of 3 masters and 3 replicas, three processes",
}
PROCESSES = {"pg2": 2, "pg3": 3, "cluster3": 3}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status_kb(pid: int, field: str) -> int:
    """A `VmRSS:`-style line of /proc/<pid>/status, in KB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        # The command name may contain spaces: fields are counted after its ')'.
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Server:
    """One server process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, port: int, log_path: Path):
        self.name, self.port, self.log_path = name, port, log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() kills it and any child
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}; log tail:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60, http_path: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if http_path:
                    url = f"http://127.0.0.1:{self.port}{http_path}"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status != 200:
                            raise OSError(response.status)
                return
            except OSError:
                time.sleep(0.2)
        raise BenchError(f"{self.name} not ready on port {self.port} after {timeout} s")

    def family(self) -> list[int]:
        """The server's process and its children (the notifier that `manage.py serve` starts):
        their CPU and memory count as the server's."""
        pids = [self.proc.pid]
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in path.read_text().split()]
        return pids

    def _sum(self, read) -> float:
        total = 0
        for pid in self.family():
            with contextlib.suppress(OSError, BenchError):
                total += read(pid)
        return total

    def rss_kb(self) -> int:
        return self._sum(lambda pid: proc_status_kb(pid, "VmRSS"))

    def peak_rss_kb(self) -> int:
        return self._sum(lambda pid: proc_status_kb(pid, "VmHWM"))

    def cpu(self) -> float:
        return self._sum(cpu_seconds)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def log_lines(self) -> list[str]:
        if not self.log_file.closed:
            self.log_file.flush()
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        stop_group(self.proc, grace=10)
        self.log_file.close()


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Also anything left in the group after the leader exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class LoadGen:
    """bench/loadgen.js in interactive mode: JSON commands in, JSON events out."""

    def __init__(self, data: Path, urls: list[str], args, log_path: Path, limit: int = 0):
        argv = [
            NODE,
            str(BENCH / "loadgen.js"),
            "--interactive",
            "--data",
            str(data),
            "--urls",
            ",".join(urls),
            "--concurrency",
            str(args.concurrency),
            "--drain",
            str(args.drain),
            "--settle-max",
            str(args.settle_max),
        ]
        if limit:
            argv += ["--limit", str(limit)]
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            start_new_session=True,
        )
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def read_event(self, timeout: float, servers: list[Server] = ()) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            for server in servers:
                server.check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load generator: no answer within {timeout:.0f} s")
            if self.selector.select(timeout=min(left, 1.0)):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise BenchError(f"load generator exited with code {self.proc.wait()}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        event = json.loads(line)
        if event.get("event") == "error":
            raise BenchError(f"load generator: {event.get('message')}")
        return event

    def command(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def close(self, graceful: bool = True) -> None:
        """Let it close its sockets and exit; on an error or interruption just kill it."""
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.command(cmd="quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        stop_group(self.proc, grace=2)
        self.selector.close()
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(graceful=exc_type is None)


# ---------------------------------------------------------------- measurements


def step_failures(result: dict, p99_limit: float) -> list[str]:
    """Why a step does not count as sustained (empty list: it passes)."""
    reasons = []
    if result["lost"]:
        reasons.append(f"{result['lost']} lost")
    if result["duplicates"]:
        reasons.append(f"{result['duplicates']} duplicates")
    if result["errors"]:
        reasons.append(f"errors {result['errors']}")
    if result["closes"]:
        reasons.append(f"closes {result['closes']}")
    if result["delivered"] == 0:
        reasons.append("nothing delivered")
    elif result["p99Ms"] > p99_limit:
        reasons.append(f"p99 {result['p99Ms']:.0f} ms > {p99_limit:.0f} ms")
    # The generator shares the machine: if it fell behind, the step measured it, not the server.
    if result["sendRate"] < 0.95 * result["targetRate"]:
        reasons.append(
            f"generator sent only {result['sendRate']:.0f}/s of {result['targetRate']:.0f}/s"
        )
    return reasons


def run_step(
    loadgen: LoadGen, servers: list[Server], rate: float, args, kind: str = "message"
) -> dict:
    """One step: new messages (`message`) or edits and reactions (`log`) at `rate` per second."""
    for server in servers:
        server.check_alive()
    cpu0 = [s.cpu() for s in servers]
    t0 = time.monotonic()
    loadgen.command(cmd="step", rate=rate, duration=args.duration, kind=kind)
    # Generous: reconnects and the settle wait come before the timed part.
    result = loadgen.read_event(args.duration + args.drain + 300, servers)
    wall = time.monotonic() - t0
    result["serverCpuPct"] = round(
        100 * sum(s.cpu() - c for s, c in zip(servers, cpu0, strict=True)) / wall, 1
    )
    result["serverRssKB"] = sum(s.rss_kb() for s in servers)
    result["failures"] = step_failures(result, args.p99_limit)
    result["passed"] = not result["failures"]
    unit = "msg/s" if kind == "message" else "changes/s"
    log(
        f"  {rate:>7.0f} {unit}: delivered/s {result['deliveredPerSec']:>9.0f}"
        f"  p50 {result['p50Ms']:>7.1f}  p99 {result['p99Ms']:>8.1f}  max {result['maxMs']:>8.1f} ms"
        f"  lost {result['lost']}  dup {result['duplicates']}  longest silence {result['maxFrameGapMs']:.0f} ms"
        f"  server CPU {result['serverCpuPct']}%"
        f"  gen CPU {result['generatorCpuPct']}%  {'ok' if result['passed'] else 'FAIL: ' + '; '.join(result['failures'])}"
    )
    return result


def measure_target(
    name: str,
    servers: list[Server],
    data: dict[str, Path],
    args,
    workdir: Path,
    out: dict,
    chat_log: bool = False,
) -> None:
    """Connect/memory measurement, steady step and search against running servers, and with
    `chat_log` (our server; the reference and the ceiling have no edits) the chat log's steps.

    Fills `out` as it goes, so that what was measured survives a later failure.
    """
    out["processes"] = len(servers)
    urls = [s.url for s in servers]

    # Warm-up: the first connections import and build lazily created things;
    # without it their memory would be charged to the idle connections.
    with LoadGen(data["connect"], urls, args, workdir / "loadgen.log", limit=50) as warm:
        warm.read_event(120, servers)
    time.sleep(1.0)

    log(f"[{name}] opening {args.connect_users} connections")
    rss_before = sum(s.rss_kb() for s in servers)
    cpu_before = sum(s.cpu() for s in servers)
    with LoadGen(data["connect"], urls, args, workdir / "loadgen.log") as gen:
        connected = gen.read_event(600, servers)
        cpu_connecting = sum(s.cpu() for s in servers) - cpu_before
        time.sleep(args.idle_settle)  # presence frames, buffers: let it go quiet
        rss_idle = sum(s.rss_kb() for s in servers)
    n = connected["connected"]
    out["connect"] = {
        **{k: v for k, v in connected.items() if k != "event"},
        "rssBeforeKB": rss_before,
        "rssIdleKB": rss_idle,
        "idleKBPerConnection": round((rss_idle - rss_before) / n, 2) if n else None,
        # The servers' CPU from the first handshake to the last `connect` frame (and the
        # load generator's start), per connection: steadier than the wall time on a busy VM.
        "serverCpuMsPerConnection": round(1000 * cpu_connecting / n, 3) if n else None,
    }
    log(
        f"[{name}] {n}/{args.connect_users} connected in {connected['connectMs'] / 1000:.2f} s,"
        f" idle memory {out['connect']['idleKBPerConnection']} KB per connection"
    )
    time.sleep(2.0)  # let the server finish the disconnects before loading it

    log(f"[{name}] opening {args.users} connections for the load steps")
    with LoadGen(data["load"], urls, args, workdir / "loadgen.log") as gen:
        out["loadConnect"] = {k: v for k, v in gen.read_event(600, servers).items() if k != "event"}
        done: list[dict] = []  # the session's steps in order, to attach late deliveries to

        def step(rate: float, kind: str = "message") -> dict:
            result = run_step(gen, servers, rate, args, kind)
            attach_late(done, result.pop("previous", None))
            done.append(result)
            return result

        log(f"[{name}] steady step at {args.steady_rate} msg/s for {args.duration} s")
        out["steady"] = step(args.steady_rate)
        out["search"] = {"steps": [], "maxRate": None, "maxDeliveriesPerSec": None}
        if args.search_rates:
            log(f"[{name}] max-throughput search")
            if climb(out["search"], args.search_rates, step):
                out["search"]["stopReason"] = "every rate of the ladder passed: raise --search"
        if chat_log and args.log_fractions and out["search"]["maxRate"]:
            out["log"] = measure_log(name, gen, servers, out["search"]["maxRate"], step, args)
        # Collect the last step's late deliveries.
        gen.command(cmd="finish")
        attach_late(done, gen.read_event(args.settle_max + 60, servers).get("previous"))
    out["peakRssKB"] = sum(s.peak_rss_kb() for s in servers)


def climb(into: dict, rates: list[float], step, kind: str = "message") -> bool:
    """One step per rate, stopping at the first that fails; fills `into` as it goes (`steps`,
    `maxRate`, `maxDeliveriesPerSec`, `p99AtMaxMs`, and `stoppedAt`, `stopReason` of a failure).
    True when every rate passed."""
    for rate in rates:
        result = step(rate, kind)
        into["steps"].append(result)
        if not result["passed"]:
            into["stoppedAt"] = rate
            into["stopReason"] = "; ".join(result["failures"])
            return False
        into["maxRate"] = rate
        into["maxDeliveriesPerSec"] = result["deliveredPerSec"]
        into["p99AtMaxMs"] = result["p99Ms"]
    return True


def measure_log(
    name: str, gen: LoadGen, servers: list[Server], max_rate: float, step, args
) -> dict:
    """The chat log's speed: edits and reactions at fractions of the max message rate.

    Each sender changes one message of its own (alternately an edit and a reaction added or
    removed); every member gets an `update` per change, so a change costs what a message does
    in deliveries. The result's `ratioToMessages` is the highest passing rate over `max_rate`."""
    log(f"[{name}] chat log: every sender's message to change")
    gen.command(cmd="targets")
    targets = gen.read_event(120, servers)
    out = {
        "targets": {k: v for k, v in targets.items() if k != "event"},
        "messagesMaxRate": max_rate,
        "steps": [],
        "maxRate": None,
        "maxDeliveriesPerSec": None,
    }
    log(f"[{name}] chat log: edits and reactions at {args.log_fractions} of {max_rate:g}/s")
    climb(out, [max_rate * fraction for fraction in args.log_fractions], step, "log")
    out["ratioToMessages"] = round(out["maxRate"] / max_rate, 2) if out["maxRate"] else None
    return out


def attach_late(done: list[dict], previous: dict | None) -> None:
    """Record on a step what arrived of it after its drain period (reported one step later).

    `lost` keeps counting those as lost (they missed the deadline); `late` and
    `neverSeen` tell a slow server from one that drops deliveries.
    """
    if previous and done and done[-1]["step"] == previous["step"]:
        done[-1]["late"] = previous["late"]
        done[-1]["lateMaxMs"] = previous["lateMaxMs"]
        done[-1]["lateDuplicates"] = previous["lateDuplicates"]
        # Not seen before the generator stopped waiting (--settle-max): dropped, or very late.
        done[-1]["neverSeen"] = previous["stillMissing"]
        if previous["late"]:
            log(
                f"  (the {done[-1]['targetRate']:g} msg/s step: {previous['late']} of its lost"
                f" deliveries came late, up to {previous['lateMaxMs'] / 1000:.1f} s;"
                f" {previous['stillMissing']} never seen)"
            )


def metric_total(servers: list[Server], name: str) -> float:
    """A counter of /metrics summed over the servers."""
    total = 0.0
    for server in servers:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    total += float(line.split()[1])
    return total


def measure_storm(name: str, servers: list[Server], env: dict, data: Path, workdir: Path, args):
    """The reconnect storm: the load step's users were away while --storm-missed messages were
    stored in each of their chats; all reconnect at once and `sync` (bench/storm.js)."""
    missed = workdir / f"{name}-missed.json"
    log(f"[{name}] reconnect storm: {args.storm_missed} messages stored in each chat meanwhile")
    manage(
        env,
        "benchmissed",
        f"--data={data}",
        f"--per-chat={args.storm_missed}",
        f"--output={missed}",
    )
    counters = ("biogram_sync_requests_total", "biogram_sync_pages_read_total")
    before = [metric_total(servers, c) for c in counters]
    done = subprocess.run(
        [
            NODE,
            str(BENCH / "storm.js"),
            "--data",
            str(data),
            "--missed",
            str(missed),
            "--urls",
            ",".join(s.url for s in servers),
        ],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise BenchError(f"storm.js failed: {done.stderr[-500:]}")
    result = json.loads(done.stdout)
    requests, reads = (metric_total(servers, c) - b for c, b in zip(counters, before, strict=True))
    result["syncRequests"], result["syncPagesRead"] = int(requests), int(reads)
    result["problemCount"] = sum(result["problems"].values())
    log(
        f"[{name}] storm: {result['caughtUp']}/{result['clients']} caught up, all after"
        f" {result['allCaughtUpMs']} ms; {int(reads)} page reads for {int(requests)} sync requests;"
        f" problems: {result['problems'] or 'none'}"
    )
    return result


def memory_slope_mb_per_hour(samples: list[list[float]]) -> float | None:
    """Least-squares slope of server RSS over time, in MB per hour, after the first fifth of
    the run (start-up: caches, pools, the first buffers)."""
    tail = samples[len(samples) // 5 :]
    if len(tail) < 3:
        return None
    n = len(tail)
    mean_t = sum(t for t, _ in tail) / n
    mean_kb = sum(kb for _, kb in tail) / n
    var = sum((t - mean_t) ** 2 for t, _ in tail)
    if not var:
        return None
    slope_kb_per_s = sum((t - mean_t) * (kb - mean_kb) for t, kb in tail) / var
    return round(slope_kb_per_s * 3600 / 1024, 1)


def measure_long_run(
    name: str, kind: str, servers: list[Server], env: dict, workdir: Path, args, **run
) -> dict:
    """A churn or soak run (bench/churn.js) on new users in new chats, the servers' memory
    sampled every --memory-every seconds meanwhile."""
    data = workdir / f"{name}-{kind}.json"
    users = args.users
    manage(
        env, "benchdata", f"--users={users}", f"--chat-size={args.chat_size}", f"--output={data}"
    )
    log(
        f"[{name}] {kind}: {users} clients, {run['rate']:g} msg/s for {run['seconds']:g} s,"
        f" churn {run['churn']:g}/s, slow {run['slow']:g}, never reading {run['never']:g}"
    )
    argv = [NODE, str(BENCH / "churn.js"), "--data", str(data)]
    argv += ["--urls", ",".join(s.url for s in servers), "--rate", f"{run['rate']:g}"]
    argv += ["--duration", f"{run['seconds']:g}", "--churn", f"{run['churn']:g}"]
    argv += ["--slow", f"{run['slow']:g}", "--never", f"{run['never']:g}", "--progress", "60"]
    slow_before = metric_total(servers, "biogram_slow_client_disconnects_total")
    samples: list[list[float]] = []
    started = time.monotonic()
    log_path = workdir / f"{name}-{kind}.log"
    with open(log_path, "wb") as errors:
        proc = subprocess.Popen(
            argv, cwd=BENCH, stdout=subprocess.PIPE, stderr=errors, start_new_session=True
        )
        lines: list[dict] = []

        def read_lines():
            for raw in proc.stdout:
                event = json.loads(raw)
                lines.append(event)
                if event.get("event") != "done":
                    log(f"  {kind}: {json.dumps(event)}")

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        deadline = started + run["seconds"] + 600
        try:
            while proc.poll() is None:
                for server in servers:
                    server.check_alive()
                samples.append(
                    [round(time.monotonic() - started, 1), sum(s.rss_kb() for s in servers)]
                )
                if time.monotonic() > deadline:
                    raise BenchError(f"churn.js still running {run['seconds'] + 600:g} s on")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=args.memory_every)
        finally:
            stop_group(proc, grace=2)
        reader.join(timeout=10)
    done = next((e for e in lines if e.get("event") == "done"), None)
    if proc.returncode != 0 or done is None:
        raise BenchError(f"churn.js failed ({proc.returncode}): {log_path.read_text()[-500:]}")
    result = {k: v for k, v in done.items() if k != "event"}
    result["slowClientDisconnects"] = int(
        metric_total(servers, "biogram_slow_client_disconnects_total") - slow_before
    )
    result["memory"] = {
        "samples": samples,
        "startMB": round(samples[0][1] / 1024, 1) if samples else None,
        "endMB": round(samples[-1][1] / 1024, 1) if samples else None,
        "peakMB": round(max(kb for _, kb in samples) / 1024, 1) if samples else None,
        "slopeMBPerHour": memory_slope_mb_per_hour(samples),
    }
    log(
        f"[{name}] {kind}: {result['sent']} sent ({result['sentPerSec']}/s), {result['stored']}"
        f" stored, {result['readersComplete']}/{result['readers']} readers complete after"
        f" {result['caughtUpAfterMs']} ms, {result['reconnects']} reconnects,"
        f" {result['slowClientDisconnects']} slow clients let go; memory"
        f" {result['memory']['startMB']} → {result['memory']['endMB']} MB"
        f" (slope {result['memory']['slopeMBPerHour']} MB/h); problems: {result['problems'] or 'none'}"
    )
    return result


def summarise_logs(servers: list[Server]) -> dict:
    """Warnings and errors the servers logged (LOG_LEVEL=WARNING: all of it is news)."""
    lines = [line for s in servers for line in s.log_lines()]
    return {"lines": len(lines), "tail": lines[-30:]}


# ---------------------------------------------------------------- notifications off the hot path


def _serve_push_sink(port: int) -> None:
    """The push sink's process: answers every POST 201; `GET /stats` lists when each came,
    `GET /bodies` what each was (its path and encrypted body, base64)."""
    import base64
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    times: list[float] = []
    bodies: list[list[str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the notifier reuses its connections

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                times.append(time.monotonic())
                bodies.append([self.path, base64.b64encode(body).decode()])
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            with lock:
                body = json.dumps(bodies if self.path == "/bodies" else times).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


class PushSink:
    """A push service stand-in on 127.0.0.1 for the notification scenario, in a process of its own
    (in this one its threads would take the GIL from the acknowledgement probe)."""

    def __init__(self):
        import multiprocessing

        self.port = free_port()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve_push_sink, args=(self.port,), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.times()
                return
            time.sleep(0.1)
        raise BenchError("push sink did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    def times(self) -> list[float]:
        """When each push came (`time.monotonic()`: the same clock in every process)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as answer:
            return json.loads(answer.read())

    def count(self) -> int:
        return len(self.times())

    def bodies(self) -> list[list[str]]:
        """[path, base64 of the encrypted body] of each push, in the order they came."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/bodies", timeout=30) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


def announced_by_pushes(bodies: list[list[str]], notify: dict) -> dict[str, list[dict]]:
    """Decrypt each push (RFC 8291, the key pair and auth secret benchdata made) and group the
    payloads by endpoint: one member's notifications."""
    import base64

    import http_ece
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(notify["pushPrivateKey"].encode(), password=None)
    auth = base64.urlsafe_b64decode(notify["pushAuth"] + "=" * (-len(notify["pushAuth"]) % 4))
    by_member: dict[str, list[dict]] = {}
    for path, body in bodies:
        plain = http_ece.decrypt(
            base64.b64decode(body), private_key=key, auth_secret=auth, version="aes128gcm"
        )
        by_member.setdefault(path, []).append(json.loads(plain))
    return by_member


def latency_stats(latencies: list[float], lost: int) -> dict:
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else None

    return {
        "acks": len(ordered),
        "lost": lost,
        "p50Ms": pct(0.50),
        "p95Ms": pct(0.95),
        "p99Ms": pct(0.99),
        "maxMs": round(ordered[-1], 2) if ordered else None,
    }


async def ack_probe(senders: list[dict], urls: list[str], rate: float, duration: float) -> dict:
    """`senders` send ~100-byte messages at `rate` in all for `duration` s; each message's
    latency is send → the sender's own copy (its acknowledgement)."""
    import asyncio
    import uuid

    from websockets.asyncio.client import connect

    pending: dict[str, float] = {}
    latencies: list[float] = []

    async def one(index: int, sender: dict) -> None:
        url = f"{urls[index % len(urls)]}/ws/chat/?token={sender['token']}"
        async with connect(url, max_queue=None, open_timeout=10) as ws:
            await ws.recv()  # connect

            async def read():
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame.get("type") == "message":
                        cid = frame["data"]["message"].get("clientMessageId")
                        sent = pending.pop(cid, None)
                        if sent is not None:
                            latencies.append((time.perf_counter() - sent) * 1000)

            reader = asyncio.create_task(read())
            interval = len(senders) / rate
            await asyncio.sleep(interval * index / len(senders))
            deadline = time.perf_counter() + duration
            next_at = time.perf_counter()
            while time.perf_counter() < deadline:
                cid = uuid.uuid4().hex
                pending[cid] = time.perf_counter()
                text = f"ack probe {cid} " + "x" * 60
                frame = {"chatId": sender["chatId"], "text": text, "clientMessageId": cid}
                await ws.send(json.dumps({"type": "message", "data": frame}))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            for _ in range(30):  # the last acknowledgements
                if not pending:
                    break
                await asyncio.sleep(0.1)
            reader.cancel()

    await asyncio.gather(*(one(i, s) for i, s in enumerate(senders)))
    return latency_stats(latencies, len(pending))


async def announce(notify: dict, url: str, every: float, duration: float) -> list[float]:
    """The announcer writes to the chat of offline members every `every` s; when, each time."""
    import asyncio

    from websockets.asyncio.client import connect

    times = []
    async with connect(f"{url}/ws/chat/?token={notify['token']}", open_timeout=10) as ws:
        await ws.recv()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            times.append(time.monotonic())
            data = {"chatId": notify["chatId"], "text": f"announcement {len(times)}"}
            await ws.send(json.dumps({"type": "message", "data": data}))
            await asyncio.sleep(every)
    return times


def measure_notify(servers: list[Server], data: Path, sink: PushSink, args) -> dict:
    """Senders' acknowledgements without, then with, bursts of notifications to
    --notify-members offline members (each with a push subscription at the sink)."""
    import asyncio

    document = json.loads(data.read_text())
    notify = document["notify"]
    # One sender per chat of the load data set, so that no chat's members wait on each other.
    senders = list({u["chatId"]: u for u in document["users"]}.values())[: args.notify_senders]
    urls = [s.url for s in servers]
    rate, duration = args.notify_rate, args.notify_duration
    log(f"[notify] acknowledgements at {rate:g} msg/s for {duration:g} s, no notifications")
    result = {"members": args.notify_members, "senders": len(senders), "rate": rate}
    result["without"] = asyncio.run(ack_probe(senders, urls, rate, duration))
    before = sink.count()
    log(
        f"[notify] the same, while {args.notify_members} offline members are pushed"
        f" every {args.notify_every:g} s"
    )

    async def both():
        return await asyncio.gather(
            ack_probe(senders, urls, rate, duration),
            announce(notify, urls[0], args.notify_every, duration),
        )

    result["with"], announced = asyncio.run(both())
    # Every member must be told of every announcement, exactly once. Announcements still pending
    # when a member's notification is claimed are folded into it (with their `count`), so the
    # pushes may be fewer than the announcements: count what the decrypted pushes announce.
    expected = len(announced) * args.notify_members
    deadline = time.monotonic() + 60
    told = 0
    while time.monotonic() < deadline:
        by_member = announced_by_pushes(sink.bodies()[before:], notify)
        told = sum(p["count"] for payloads in by_member.values() for p in payloads)
        if told >= expected:
            break
        time.sleep(0.5)
    arrivals = sorted(sink.times()[before:])
    seqs = [[int(p["seq"]) for p in payloads] for payloads in by_member.values()]
    result["announcements"] = len(announced)
    result["pushesExpected"] = expected  # messages to announce, one per member and announcement
    result["messagesAnnounced"] = told
    result["membersToldOfEverything"] = sum(
        1 for payloads in by_member.values() if sum(p["count"] for p in payloads) == len(announced)
    )
    result["membersToldOutOfOrder"] = sum(1 for s in seqs if s != sorted(set(s)))
    result["pushes"] = len(arrivals)
    if len(arrivals) >= args.notify_members:
        # From the first announcement to its last push: NOTIFY_DELAY_MS, the claim, the sends.
        result["firstBurstS"] = round(arrivals[args.notify_members - 1] - announced[0], 2)
    if len(arrivals) > 1:
        result["pushesPerS"] = round((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1)
    for phase in ("without", "with"):
        r = result[phase]
        log(
            f"  {phase:>7}: acks {r['acks']} p50 {r['p50Ms']} p95 {r['p95Ms']} p99 {r['p99Ms']}"
            f" max {r['maxMs']} ms, lost {r['lost']}"
        )
    log(
        f"  {result['messagesAnnounced']}/{expected} announcements told, every one to"
        f" {result['membersToldOfEverything']}/{args.notify_members} members, in"
        f" {result['pushes']} pushes ({result['membersToldOutOfOrder']} members out of order)"
    )
    log(
        f"  pushes {result['pushes']}, first burst of {args.notify_members} done"
        f" {result.get('firstBurstS')} s after its message, {result.get('pushesPerS')} pushes/s"
    )
    return result


# ---------------------------------------------------------------- configurations


def manage(env: dict, *argv: str) -> None:
    subprocess.run([PY, "manage.py", *argv], cwd=ROOT, env=env, check=True)


def pg_admin(base_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def redis_cleanup(redis_url: str, prefix: str) -> None:
    """Delete only the keys of this run's unique prefix (never a flush)."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:  # cleanup only: report, do not mask the results
        log(f"redis cleanup of {prefix}* failed: {exc}")


def bench_ours(config: str, args, workdir: Path) -> dict:
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "REDIS_CLUSTER_NODES",
            "CHANNEL_LAYER_PREFIX",
            "DJANGO_SETTINGS_MODULE",
        }
    }
    var_dir = workdir / f"var-{config}"
    env = {
        **base_env,
        "BIOGRAM_VAR_DIR": str(var_dir),
        "RATE_LIMIT_ENABLED": "0",
        "LOG_LEVEL": "WARNING",
        # The notification scenario's push sink is http on 127.0.0.1.
        "WEBPUSH_ALLOW_INSECURE": "1",
        "NOTIFY_DELAY_MS": str(args.notify_delay_ms),
    }
    database = prefix = redis_cluster = None
    if config != "default":
        database = f"biogram_bench_{os.getpid()}_{config}"
        prefix = f"biogram-bench-{os.getpid()}-{config}-{secrets.token_hex(3)}"
        env["DATABASE_URL"] = f"{args.pg_url}/{database}"
        env["REDIS_URL"] = args.redis_url
        env["CHANNEL_LAYER_PREFIX"] = prefix
    servers: list[Server] = []
    result = {"config": config, "description": CONFIGS[config]}
    sink = PushSink() if args.notify_members else None
    try:
        if database:
            log(f"[{config}] creating database {database}")
            pg_admin(args.pg_url, f'CREATE DATABASE "{database}"')
        log(f"[{config}] migrating")
        manage(env, "migrate", "--noinput", "-v0")
        data = {}
        for kind, users in (("connect", args.connect_users), ("load", args.users)):
            data[kind] = workdir / f"{config}-{kind}.json"
            extra = []
            if kind == "load" and sink:
                extra = [f"--notify-members={args.notify_members}", f"--push-endpoint={sink.url}"]
            manage(
                env,
                "benchdata",
                f"--users={users}",
                f"--chat-size={args.chat_size}",
                f"--output={data[kind]}",
                *extra,
            )
        if config == "cluster3":
            from messaging.testing import RedisCluster

            redis_cluster = RedisCluster(masters=3, replicas=1).start()
            env["REDIS_CLUSTER_NODES"] = redis_cluster.nodes
            env.pop("REDIS_URL")
            log(f"[{config}] Redis Cluster of 3 masters and 3 replicas on {redis_cluster.nodes}")
        processes = PROCESSES.get(config, 1)
        for i in range(processes):
            port = free_port()
            servers.append(
                Server(
                    f"{config} server {i + 1}",
                    [PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env,
                    port,
                    workdir / f"{config}-server-{i + 1}.log",
                )
            )
        for server in servers:
            server.wait_ready(http_path="/healthz")
        log(f"[{config}] {processes} server process(es) up: {', '.join(s.url for s in servers)}")
        measure_target(config, servers, data, args, workdir, result, chat_log=True)
        if args.storm_missed:
            result["storm"] = measure_storm(config, servers, env, data["load"], workdir, args)
        if sink:
            result["notify"] = measure_notify(servers, data["load"], sink, args)
        if args.churn_seconds:
            result["churn"] = measure_long_run(
                config,
                "churn",
                servers,
                env,
                workdir,
                args,
                rate=args.churn_rate,
                seconds=args.churn_seconds,
                churn=0.1,
                slow=0,
                never=0,
            )
        if args.soak_seconds:
            max_rate = get(result, "search", "maxRate") or args.steady_rate
            result["soak"] = measure_long_run(
                config,
                "soak",
                servers,
                env,
                workdir,
                args,
                rate=max_rate * args.soak_fraction,
                seconds=args.soak_seconds,
                churn=0,
                slow=args.soak_slow,
                never=args.soak_never,
            )
    except Exception as exc:  # reported in the results; Ctrl-C and SIGTERM still stop the run
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{config}] FAILED: {result['error']}")
    finally:
        if sink:
            sink.stop()
        for server in servers:
            server.stop()
        if servers:
            result["serverLog"] = summarise_logs(servers)
        if database:
            with contextlib.suppress(Exception):
                pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if redis_cluster is not None:
            redis_cluster.stop()
        elif prefix:
            redis_cleanup(args.redis_url, prefix)
    return result


def bench_reference(args, workdir: Path, data: dict[str, Path]) -> dict:
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DJANGO_SETTINGS_MODULE": "bench.reference_settings",
        "REFERENCE_LAYER": args.reference_layer,
        "LOG_LEVEL": "WARNING",
    }
    prefix = None
    if args.reference_layer != "memory":
        prefix = f"biogram-bench-{os.getpid()}-reference-{secrets.token_hex(3)}"
        env["REDIS_URL"] = args.redis_url
        env["CHANNEL_LAYER_PREFIX"] = prefix
    port = free_port()
    argv = [PY, "-m", "uvicorn", "bench.reference:application", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--lifespan", "off", "--log-level", "warning", "--no-access-log"]
    result = {
        "config": "reference",
        "description": f"Channels tutorial consumer, {args.reference_layer} layer, uvicorn, one process",
    }
    server = None
    try:
        server = Server("reference server", argv, env, port, workdir / "reference-server.log")
        server.wait_ready()
        log(f"[reference] up: {server.url}")
        measure_target("reference", [server], data, args, workdir, result)
    except Exception as exc:  # reported in the results; Ctrl-C and SIGTERM still stop the run
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"[reference] FAILED: {result['error']}")
    finally:
        if server:
            server.stop()
            result["serverLog"] = summarise_logs([server])
        if prefix:
            redis_cleanup(args.redis_url, prefix)
    return result


def bench_ceiling(args, workdir: Path, data: dict[str, Path]) -> dict:
    """The bare ASGI app (bench/bare.py) on the server's own uvicorn protocol: the ceiling."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    port = free_port()
    argv = [PY, "-m", "uvicorn", "bench.bare:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
    argv += ["--lifespan", "off", "--log-level", "warning", "--no-access-log"]
    result = {
        "config": "ceiling",
        "description": "bare ASGI app (bench/bare.py) on uvicorn websockets-sansio, one process:"
        " no framework, auth, storage or ordering",
    }
    server = None
    try:
        server = Server("ceiling server", argv, env, port, workdir / "ceiling-server.log")
        server.wait_ready()
        log(f"[ceiling] up: {server.url}")
        measure_target("ceiling", [server], data, args, workdir, result)
    except Exception as exc:  # reported in the results; Ctrl-C and SIGTERM still stop the run
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"[ceiling] FAILED: {result['error']}")
    finally:
        if server:
            server.stop()
            result["serverLog"] = summarise_logs([server])
    return result


# ---------------------------------------------------------------- report


def get(result: dict, *path):
    value = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(ours, ref) -> str:
    if not isinstance(ours, int | float) or not isinstance(ref, int | float) or not ref:
        return "—"
    return f"{ours / ref:.2f}x"


def markdown(results: list[dict], reference: dict | None, args, ceiling: dict | None = None) -> str:
    sr = args.steady_rate
    rows = [
        ("connections opened", ("connect", "connected"), 0),
        (f"connect time, {args.connect_users} connections (s)", ("connect", "connectS"), 2),
        ("connect: handshake p99 (ms)", ("connect", "handshakeP99Ms"), 1),
        ("connect: servers' CPU per connection (ms)", ("connect", "serverCpuMsPerConnection"), 3),
        ("idle memory per connection (KB)", ("connect", "idleKBPerConnection"), 1),
        (f"steady {sr:g} msg/s: delivered/s", ("steady", "deliveredPerSec"), 0),
        ("steady: p50 latency (ms)", ("steady", "p50Ms"), 1),
        ("steady: p95 latency (ms)", ("steady", "p95Ms"), 1),
        ("steady: p99 latency (ms)", ("steady", "p99Ms"), 1),
        ("steady: max latency (ms)", ("steady", "maxMs"), 1),
        ("steady: expected deliveries", ("steady", "expected"), 0),
        ("steady: lost (not delivered within the drain)", ("steady", "lost"), 0),
        ("steady: of those, arrived late", ("steady", "late"), 0),
        ("steady: of those, never seen", ("steady", "neverSeen"), 0),
        ("steady: duplicates", ("steady", "duplicates"), 0),
        ("steady: errors", ("steady", "errors"), 0),
        ("steady: closes", ("steady", "closes"), 0),
        ("steady: longest silence (ms)", ("steady", "maxFrameGapMs"), 0),
        ("steady: server CPU (% of a core)", ("steady", "serverCpuPct"), 0),
        ("steady: generator CPU (% of a core)", ("steady", "generatorCpuPct"), 0),
        ("max rate passing (msg/s)", ("search", "maxRate"), 0),
        ("max deliveries/s", ("search", "maxDeliveriesPerSec"), 0),
        ("p99 at max (ms)", ("search", "p99AtMaxMs"), 1),
        ("search stopped at (msg/s)", ("search", "stoppedAt"), 0),
        ("why it stopped", ("search", "stopReason"), 0),
        ("chat log (edits, reactions): max rate passing (changes/s)", ("log", "maxRate"), 0),
        ("chat log: max deliveries/s", ("log", "maxDeliveriesPerSec"), 0),
        ("chat log: max rate over the max message rate", ("log", "ratioToMessages"), 2),
        ("chat log: stopped at (changes/s)", ("log", "stoppedAt"), 0),
        ("chat log: why it stopped", ("log", "stopReason"), 0),
        ("peak RSS (MB)", ("peakRssMB",), 1),
        (
            f"storm: {args.users} reconnect, {args.storm_missed} missed a chat: all caught up (ms)",
            ("storm", "allCaughtUpMs"),
            0,
        ),
        ("storm: caught up p50 (ms)", ("storm", "caughtUpP50Ms"), 0),
        ("storm: all connected (ms)", ("storm", "allConnectedMs"), 0),
        ("storm: clients caught up", ("storm", "caughtUp"), 0),
        ("storm: problems (gaps, duplicates, errors)", ("storm", "problemCount"), 0),
        ("storm: sync requests", ("storm", "syncRequests"), 0),
        ("storm: page reads", ("storm", "syncPagesRead"), 0),
        (
            f"ack p50 (ms), {args.notify_rate:g} msg/s, no notifications",
            ("notify", "without", "p50Ms"),
            1,
        ),
        ("ack p99 (ms), no notifications", ("notify", "without", "p99Ms"), 1),
        ("ack max (ms), no notifications", ("notify", "without", "maxMs"), 1),
        (
            f"ack p50 (ms), while {args.notify_members} offline members are pushed",
            ("notify", "with", "p50Ms"),
            1,
        ),
        ("ack p99 (ms), while pushing", ("notify", "with", "p99Ms"), 1),
        ("ack max (ms), while pushing", ("notify", "with", "maxMs"), 1),
        ("announcements to tell (members times announcements)", ("notify", "pushesExpected"), 0),
        ("announcements told by the pushes (their `count`)", ("notify", "messagesAnnounced"), 0),
        ("members told of every announcement", ("notify", "membersToldOfEverything"), 0),
        ("pushes received (announcements pending together are folded)", ("notify", "pushes"), 0),
        (f"first {args.notify_members} pushes done after (s)", ("notify", "firstBurstS"), 2),
        ("pushes/s", ("notify", "pushesPerS"), 0),
        (
            f"churn: {args.churn_rate:g} msg/s for {args.churn_seconds:g} s, 10 %/s reconnect:"
            " messages stored",
            ("churn", "stored"),
            0,
        ),
        ("churn: sent/s", ("churn", "sentPerSec"), 0),
        ("churn: reconnects", ("churn", "reconnects"), 0),
        ("churn: clients with every message once, in order", ("churn", "readersComplete"), 0),
        ("churn: all caught up after sending stopped (ms)", ("churn", "caughtUpAfterMs"), 0),
        ("churn: problems (holes, duplicates, errors)", ("churn", "problemCount"), 0),
        (
            f"soak: {args.soak_fraction:g} of the max rate for {args.soak_seconds:g} s: msg/s",
            ("soak", "rate"),
            0,
        ),
        ("soak: messages stored", ("soak", "stored"), 0),
        ("soak: slow / never-reading clients", ("soak", "slowAndNever"), 0),
        ("soak: slow clients let go by the server", ("soak", "slowClientDisconnects"), 0),
        ("soak: reading clients with every message", ("soak", "readersComplete"), 0),
        ("soak: problems (holes, duplicates, errors)", ("soak", "problemCount"), 0),
        ("soak: memory at start (MB)", ("soak", "memory", "startMB"), 1),
        ("soak: memory at end (MB)", ("soak", "memory", "endMB"), 1),
        ("soak: memory slope (MB per hour)", ("soak", "memory", "slopeMBPerHour"), 1),
        ("server log lines (WARNING+)", ("serverLog", "lines"), 0),
    ]
    for r in [*results, reference, ceiling]:
        if r:
            if get(r, "connect", "connectMs") is not None:
                r["connect"]["connectS"] = round(r["connect"]["connectMs"] / 1000, 3)
            if r.get("soak"):
                r["soak"]["slowAndNever"] = f"{r['soak']['slow']} / {r['soak']['never']}"
            if r.get("peakRssKB"):
                r["peakRssMB"] = round(r["peakRssKB"] / 1024, 1)
    header = ["figure"]
    for r in results:
        header.append(r["config"])
        if ceiling:
            header.append(f"{r['config']}/ceiling")
        if reference:
            header.append(f"{r['config']}/ref")
    if ceiling:
        header.append("ceiling")
    if reference:
        header.append("reference")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for label, path, digits in rows:
        cells = [label]
        ref_value = get(reference, *path) if reference else None
        ceiling_value = get(ceiling, *path) if ceiling else None
        for r in results:
            value = get(r, *path)
            cells.append(fmt(value, digits))
            if ceiling:
                cells.append(ratio(value, ceiling_value))
            if reference:
                cells.append(ratio(value, ref_value))
        if ceiling:
            cells.append(fmt(ceiling_value, digits))
        if reference:
            cells.append(fmt(ref_value, digits))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)

    for r in [*results, ceiling, reference]:
        if not r:
            continue
        text += f"\n\n**{r['config']}** ({r['description']})"
        if r.get("error"):
            text += f"\n\nFAILED: {r['error']}"
        steps = (
            ([r["steady"]] if r.get("steady") else [])
            + (get(r, "search", "steps") or [])
            + (get(r, "log", "steps") or [])
        )
        if steps:
            text += (
                "\n\n| msg/s | sent | expected | delivered | lost | late | never seen | dup"
                " | delivered/s | p50 | p95 | p99 | max ms | server CPU % | gen CPU % | verdict |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            )
            for i, s in enumerate(steps):
                label = f"{s['targetRate']:g}" + (" (steady)" if i == 0 and r.get("steady") else "")
                if s.get("kind") == "log":
                    label += " (log)"
                verdict = "ok" if s["passed"] else "; ".join(s["failures"])
                if not s.get("settled", True):
                    verdict += " (began while an earlier backlog was still arriving)"
                text += (
                    f"\n| {label} | {s['sent']:,} | {s['expected']:,} | {s['delivered']:,}"
                    f" | {s['lost']:,} | {fmt(s.get('late'))} | {fmt(s.get('neverSeen'))}"
                    f" | {s['duplicates']:,} | {s['deliveredPerSec']:,.0f}"
                    f" | {s['p50Ms']:.1f} | {s['p95Ms']:.1f} | {s['p99Ms']:.1f} | {s['maxMs']:.1f}"
                    f" | {s['serverCpuPct']:.0f} | {s['generatorCpuPct']:.0f} | {verdict} |"
                )
        tail = get(r, "serverLog", "tail")
        if tail:
            text += "\n\nServer log (last lines):\n\n```\n" + "\n".join(tail[-10:]) + "\n```"
    return text


def machine_info() -> dict:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for module in ("django", "channels", "channels_redis", "uvicorn", "websockets"):
        with contextlib.suppress(Exception):
            versions[module] = __import__(module).__version__
    node = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "node": node,
        "versions": versions,
        "commit": commit,
        "loadAverageAtStart": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Benchmark the Biogram server against the Channels tutorial consumer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default="default",
        help="comma-separated: " + ", ".join(f"{k} ({v})" for k, v in CONFIGS.items()),
    )
    parser.add_argument("--users", type=int, default=1000, help="connections for the load steps")
    parser.add_argument("--chat-size", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending per step")
    parser.add_argument("--steady-rate", type=float, default=500.0, help="messages/s")
    parser.add_argument(
        "--search",
        dest="search_rates",
        nargs="?",
        const=DEFAULT_LADDER,
        default=DEFAULT_LADDER,
        help="the max-throughput search's ladder of rates (messages/s), comma-separated",
    )
    parser.add_argument("--no-search", dest="search_rates", action="store_const", const="")
    parser.add_argument(
        "--log",
        dest="log_fractions",
        default="0.5,0.75,1",
        help="after the search, the chat log's steps (edits and reactions) at these fractions"
        " of the max message rate, comma-separated; empty skips them",
    )
    parser.add_argument("--p99-limit", type=float, default=200.0, help="ms; a step above fails")
    parser.add_argument(
        "--connect-users", type=int, default=5000, help="connections for connect time and memory"
    )
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the bare-ASGI ceiling (bench/bare.py) every figure is a ratio to",
    )
    parser.add_argument(
        "--reference-layer",
        choices=["memory", "pubsub", "redis"],
        default="memory",
        help="channel layer of the reference consumer",
    )
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to wait after sending")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument(
        "--settle-max", type=float, default=30.0, help="seconds to wait for a backlog between steps"
    )
    parser.add_argument("--idle-settle", type=float, default=2.0, help="seconds before idle RSS")
    parser.add_argument(
        "--storm-missed",
        type=int,
        default=100,
        help="messages each chat gets while its members are away before the reconnect storm"
        " (0 skips it)",
    )
    parser.add_argument(
        "--notify-members",
        type=int,
        default=1000,
        help="offline members pushed in the notification scenario (0 skips it)",
    )
    parser.add_argument("--notify-senders", type=int, default=20, help="senders whose acks count")
    parser.add_argument("--notify-rate", type=float, default=100.0, help="their messages/s")
    parser.add_argument("--notify-duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument(
        "--notify-every", type=float, default=2.0, help="seconds between announcements"
    )
    parser.add_argument("--notify-delay-ms", type=int, default=1000, help="NOTIFY_DELAY_MS")
    parser.add_argument(
        "--churn-seconds",
        type=float,
        default=300.0,
        help="the churn run: a tenth of the clients drop and come back every second while all"
        " send at --churn-rate (0 skips it)",
    )
    parser.add_argument("--churn-rate", type=float, default=2000.0, help="messages/s of the churn")
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=1800.0,
        help="the soak: --soak-fraction of the max rate passing, slow and never-reading clients"
        " among the rest, memory sampled (0 skips it)",
    )
    parser.add_argument("--soak-fraction", type=float, default=0.5)
    parser.add_argument("--soak-slow", type=float, default=0.05, help="fraction reading in bursts")
    parser.add_argument("--soak-never", type=float, default=0.02, help="fraction never reading")
    parser.add_argument("--memory-every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--output", help="write all results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.config.split(",") if c.strip()]
    for config in args.configs:
        if config not in CONFIGS:
            parser.error(f"unknown --config {config!r}; choose from {', '.join(CONFIGS)}")
    args.search_rates = [float(r) for r in args.search_rates.split(",") if r.strip()]
    args.log_fractions = [float(f) for f in args.log_fractions.split(",") if f.strip()]
    if args.users < args.chat_size or args.connect_users < 1:
        parser.error("--users must be at least --chat-size and --connect-users positive")
    return args


def ensure_node_modules() -> None:
    if not (BENCH / "node_modules" / "ws").is_dir():
        log("installing the load generator's dependency (npm install)")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=BENCH, check=True)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        log(f"warning: open-file limit {soft} < {needed}: connections may fail")


def _terminated(*_):
    log("terminated: stopping the servers and the load generator")
    sys.exit(143)


def main(argv=None) -> int:
    args = parse_args(argv)
    # A SIGTERM (e.g. from a CI timeout) must still run the finally blocks that stop servers.
    signal.signal(signal.SIGTERM, _terminated)
    ensure_node_modules()
    raise_fd_limit(max(args.users, args.connect_users) + 1000)
    machine = machine_info()
    if machine["loadAverageAtStart"] > 0.5 * (machine["cores"] or 1):
        log(
            f"warning: load average {machine['loadAverageAtStart']:.2f} at start: the machine"
            " is busy, figures will be noisy"
        )
    workdir = Path(tempfile.mkdtemp(prefix="biogram-bench-"))
    log(f"work dir {workdir}")
    results, reference, ceiling = [], None, None
    try:
        for config in args.configs:
            results.append(bench_ours(config, args, workdir))
        # Same data files: the ceiling and the reference ignore the tokens and use chatId.
        first = args.configs[0]
        data = {k: workdir / f"{first}-{k}.json" for k in ("connect", "load")}
        if not args.no_ceiling:
            if all(p.exists() for p in data.values()):
                ceiling = bench_ceiling(args, workdir, data)
            else:
                ceiling = {"config": "ceiling", "description": "", "error": "no bench data"}
        if not args.no_reference:
            if all(p.exists() for p in data.values()):
                reference = bench_reference(args, workdir, data)
            else:
                reference = {"config": "reference", "description": "", "error": "no bench data"}
    finally:
        machine["loadAverageAtEnd"] = os.getloadavg()[0]
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = markdown(results, reference, args, ceiling)
    print(f"\n## Biogram bench, {machine['date']}\n")
    print(
        f"{machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, Node"
        f" {machine['node']}, commit {machine['commit']}; load average"
        f" {machine['loadAverageAtStart']:.2f} at start, {machine['loadAverageAtEnd']:.2f} at end."
    )
    print(
        f"{args.users} connections in chats of {args.chat_size}, {args.duration:g} s per step,"
        f" pass = p99 ≤ {args.p99_limit:g} ms and nothing lost;"
        f" connect/memory with {args.connect_users} connections.\n"
    )
    print(report)
    if args.output:
        document = {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items() if k != "configs"},
            "results": results,
            "reference": reference,
            "ceiling": ceiling,
        }
        Path(args.output).write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {args.output}")
        from bench import charts

        chart = charts.draw(document, Path(args.output).with_suffix(".png"))
        log(f"drew {chart}")
        memory = charts.draw_memory(document, Path(args.output).with_suffix(".memory.png"))
        if memory:
            log(f"drew {memory}")
    failed = [r["config"] for r in [*results, reference, ceiling] if r and r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
