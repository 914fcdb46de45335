"""The picture of a run: ``plot_run(report, samples, path)`` writes a PNG with the
end-to-end latency histogram (log scales) and each node's throughput over time.
Needs matplotlib (``pip install 'framebus[plot]'``); ``PlotUnavailable`` says so."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from .errors import FlowError

if TYPE_CHECKING:
    from .live import Sample
    from .report import Report

__all__ = ["PlotUnavailable", "latency_bins", "plot_run"]

INSTALL_HINT = "pip install 'framebus[plot]' (matplotlib)"


class PlotUnavailable(FlowError):
    """matplotlib is not installed."""


def latency_bins(report: Report, bins_per_decade: int = 10) -> tuple[list[float], list[int]]:
    """The end-to-end latencies as a histogram on log-spaced bins: (edges in us, counts),
    len(edges) == len(counts) + 1; empty lists when nothing reached a sink."""
    h = report.latency
    if not h.get_total_count():
        return [], []
    lo = max(h.get_min_value(), 1) / 1000
    hi = max(h.get_max_value(), 1) / 1000
    first = math.floor(math.log10(lo) * bins_per_decade)
    last = math.floor(math.log10(hi) * bins_per_decade) + 1
    edges = [10 ** (k / bins_per_decade) for k in range(first, last + 1)]
    counts = [0] * (len(edges) - 1)
    for it in h.get_recorded_iterator():
        us = max(it.value_iterated_to, 1) / 1000
        k = min(max(math.floor(math.log10(us) * bins_per_decade) - first, 0), len(counts) - 1)
        counts[k] += it.count_at_value_iterated_to
    return edges, counts


def plot_run(report: Report, samples: list[Sample], path: str | os.PathLike[str]) -> str:
    """Writes the PNG to ``path`` (its directory must exist) and returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(f"the plot needs matplotlib: {INSTALL_HINT}") from exc
    fig, (ax_lat, ax_rate) = plt.subplots(1, 2, figsize=(12, 4.5))
    edges, counts = latency_bins(report)
    lat = report.latency_ns()
    if counts:
        ax_lat.stairs(counts, edges, fill=True, alpha=0.7)
        for key, style in (("p50", ":"), ("p99", "--"), ("p99.9", "-.")):
            ax_lat.axvline(lat[key] / 1000, color="k", linestyle=style, linewidth=1, label=key)
        ax_lat.set_xscale("log")
        ax_lat.set_yscale("log")
        ax_lat.set_xlim(edges[0], edges[-1])
        ax_lat.legend()
    else:
        ax_lat.text(0.5, 0.5, "no item reached a sink", ha="center", transform=ax_lat.transAxes)
    ax_lat.set_xlabel("end-to-end latency (us)")
    ax_lat.set_ylabel("items")
    ax_lat.set_title(
        f"{report.graph} ({report.runtime}): p50 {lat['p50'] / 1000:.0f} us, "
        f"p99 {lat['p99'] / 1000:.0f} us, {lat['count']:,} items"
    )
    _rates(ax_rate, report, samples)
    fig.tight_layout()
    out = os.fspath(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _rates(ax: Any, report: Report, samples: list[Sample]) -> None:
    from .live import Sample

    ax.set_title("throughput per node (items out per second, log scale)")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("items/s")
    if not samples:
        ax.text(0.5, 0.5, "no sample taken", ha="center", transform=ax.transAxes)
        return
    points = [Sample(0.0, {}), *samples]  # the run starts from nothing
    drawn = False
    for name in report.nodes:
        ts, rates = [], []
        for a, b in zip(points, points[1:], strict=False):
            dt = b.t - a.t
            if dt <= 0:
                continue
            before = a.nodes.get(name, {}).get("items_out", 0)
            after = b.nodes.get(name, {}).get("items_out", 0)
            if after > before:  # a log scale shows no zero
                ts.append(b.t)
                rates.append((after - before) / dt)
        if rates:
            ax.plot(ts, rates, marker=".", label=f"{name} ({report.nodes[name].kind})")
            drawn = True
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize="small")
