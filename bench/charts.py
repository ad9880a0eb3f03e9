"""Charts of a `make bench` run, for a person to look at instead of the JSON (PNG, matplotlib).

    python -m bench.charts RESULTS.json OUT.png

`draw`: one figure, two panels sharing the offered rate (messages/s): delivered/s, and
p99 latency with the pass limit, for each configuration of ours, the bare-ASGI
ceiling (bench/bare.py) and the Channels tutorial reference, from the steady
step and every step of the max-throughput search. `draw_memory`: the servers'
memory over the churn and soak runs, with the slope per hour.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLES = {"ceiling": ("#6b7280", "--"), "reference": ("#b91c1c", ":")}


def steps_of(result: dict) -> list[dict]:
    steps = ([result["steady"]] if result.get("steady") else []) + (
        (result.get("search") or {}).get("steps") or []
    )
    return sorted(steps, key=lambda s: s["targetRate"])


def draw(document: dict, path: Path) -> Path:
    runs = [*document.get("results", []), document.get("ceiling"), document.get("reference")]
    runs = [r for r in runs if r and steps_of(r)]
    limit = (document.get("args") or {}).get("p99_limit", 200)
    figure, (throughput, latency) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for run in runs:
        steps = steps_of(run)
        color, line = STYLES.get(run["config"], (None, "-"))
        rates = [s["targetRate"] for s in steps]
        label = run["config"]
        throughput.plot(
            rates, [s["deliveredPerSec"] for s in steps], line, marker="o", color=color, label=label
        )
        latency.plot(rates, [s["p99Ms"] for s in steps], line, marker="o", color=color, label=label)
        failed = [s for s in steps if not s["passed"]]
        latency.scatter(
            [s["targetRate"] for s in failed],
            [s["p99Ms"] for s in failed],
            marker="x",
            color="black",
            zorder=5,
        )
    throughput.set_ylabel("deliveries/s")
    throughput.set_title("Delivered per second against the offered rate")
    throughput.grid(alpha=0.3)
    throughput.legend()
    latency.axhline(limit, color="#b45309", linewidth=1, label=f"p99 limit {limit:g} ms")
    latency.set_yscale("log")
    latency.set_ylabel("p99 latency (ms, log)")
    latency.set_xlabel("offered rate (messages/s; each delivered to every member of its chat)")
    latency.set_title("p99 latency (x: a step that failed)")
    latency.grid(alpha=0.3, which="both")
    latency.legend()
    machine = document.get("machine") or {}
    figure.suptitle(f"Biogram bench {machine.get('date', '')}, commit {machine.get('commit', '')}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_memory(document: dict, path: Path) -> Path | None:
    """Server RSS over the churn and soak runs of each configuration (None: there were none)."""
    runs = [
        (f"{r['config']} {kind}", r[kind])
        for r in document.get("results", [])
        for kind in ("churn", "soak")
        if (r.get(kind) or {}).get("memory", {}).get("samples")
    ]
    if not runs:
        return None
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for label, run in runs:
        samples = run["memory"]["samples"]
        slope = run["memory"].get("slopeMBPerHour")
        axes.plot(
            [t / 60 for t, _ in samples],
            [kb / 1024 for _, kb in samples],
            label=f"{label}: {run['rate']:g} msg/s, slope {slope} MB/h",
        )
    axes.set_xlabel("minutes")
    axes.set_ylabel("server RSS (MB, all processes)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    machine = document.get("machine") or {}
    axes.set_title(f"Server memory over the long runs, {machine.get('date', '')}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    document = json.loads(source.read_text())
    print(draw(document, target))
    print(draw_memory(document, target.with_suffix(".memory.png")))
