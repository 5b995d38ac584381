"""Plots aegis-bench's per-second CSV: messages acked and received per
second, and the gateway's and PostgreSQL's CPU, over the run's phases."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    if not rows:
        sys.exit(f"{src} has no samples")
    t = [float(r["seconds"]) for r in rows]
    rate, prev = [], None
    for r in rows:
        done = int(r["acked"]) + int(r["down_received"])
        key = r["phase"]
        # Counters restart with each phase; a rate needs the previous row of the same phase.
        rate.append(0 if prev is None or prev[0] != key else max(0, done - prev[1]))
        prev = (key, done)
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    ax1.plot(t, rate, label="acked + received per second")
    ax1.set_ylabel("messages/s")
    ax1.legend(loc="upper right")
    ax2.plot(t, [float(r["gateway_cpu_percent"]) for r in rows], label="aegisd CPU %")
    ax2.plot(t, [float(r["postgres_cpu_percent"]) for r in rows], label="PostgreSQL CPU %")
    ax2.set_ylabel("CPU % (100 = one core)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper right")
    start = {}
    for r in rows:
        start.setdefault(r["phase"], float(r["seconds"]))
    for name, at in start.items():
        for ax in (ax1, ax2):
            ax.axvline(at, color="grey", linewidth=0.5)
        ax1.annotate(name, (at, 0), rotation=90, fontsize=7, va="bottom")
    fig.suptitle("aegis-bench")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
