"""Plot fan-out deliveries/s against users for every target, from one bench/run.py results file.

    bench/.venv/bin/python bench/plot.py bench/results/RUN.json docs/fanout.png

Run with the bench venv's python (matplotlib lives there, never in the server's environment).
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"ours": "ours (server.py)", "raw-relay": "raw TCP relay (no framing)",
          "node-ws": "ws (Node.js)", "uws": "uWebSockets.js (Node.js)"}
STYLES = {"ours": dict(color="#d62728", linewidth=2.6, marker="o", zorder=5),
          "raw-relay": dict(color="#7f7f7f", linestyle="--", marker="s")}


def main(results: str, out: str) -> None:
    data = json.loads(Path(results).read_text())
    runs = [r for r in data["runs"] if r["scenario"] == "fanout" and r.get("ok")]
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        values[r["target"]][int(r["case"])].append(r["deliveries_per_s"])
    if not values:
        sys.exit("plot: no fan-out results in " + results)
    order = [t for t in data["meta"]["targets"] if t in values]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for target in order:
        users = sorted(values[target])
        med = [statistics.median(values[target][u]) for u in users]
        ax.plot(users, med, label=LABELS.get(target, target),
                **STYLES.get(target, dict(marker="o")))
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_users = sorted({u for t in values.values() for u in t})
    ax.set_xticks(all_users)
    ax.set_xticklabels([f"{u:,}" for u in all_users])
    ax.set_xlabel("users (every message is delivered to all of them)")
    ax.set_ylabel("deliveries per second (median)")
    meta = data["meta"]
    ax.set_title("Chat fan-out, one server core "
                 f"({meta['machine']['cpu']}, {meta['started']})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot: wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
