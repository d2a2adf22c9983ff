"""The benchmark's picture: per model, throughput, latency and start-up, each on a scale where every
line can be read, with plain caller counts on the x axis."""

from __future__ import annotations

from pathlib import Path

from lstmserve.server.bench.report import reference_samples_per_s

# A limit more than this many times the highest measured line would flatten the lines that matter (the
# seed's in-process call rate is ~100x its server's): it is written on the panel instead of drawn.
OFF_SCALE = 3.0


def plot(results: dict, path: Path) -> Path | None:
    """Throughput, latency and start-up per model; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = results["models"]
    figure, axes = plt.subplots(len(models), 3, figsize=(16, 4.2 * len(models)), squeeze=False,
                                gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]})
    for row, (name, result) in zip(axes, models.items()):
        _throughput(row[0], name, result)
        _latency(row[1], name, result)
        _startup(row[2], name, result.get("footprint"))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _throughput(ax, name: str, result: dict) -> None:
    key = "requests_per_s" if result["rows_per_request"] == 1 else "samples_per_s"
    highest = 0.0
    for label, levels in (("server", result["server"]), ("transport floor", result["floor"])):
        values = [lv[key] for lv in levels]
        ax.plot([lv["concurrency"] for lv in levels], values, "o-", label=label)
        highest = max(highest, *values)
    base = result["baseline"]
    # One row per request: the model's own call rate is the limit; otherwise its best samples/s.
    limit, what = ((1000 / base["batch1_p50_ms"], "in-process batch-1 calls/s") if key == "requests_per_s"
                   else (reference_samples_per_s(base), "in-process best samples/s"))
    if limit <= OFF_SCALE * highest:
        ax.axhline(limit, ls="--", c="grey", label=what)
        highest = max(highest, limit)
    else:
        ax.text(0.02, 0.97, f"{what}: {limit:,.0f} (off this scale)", transform=ax.transAxes,
                va="top", fontsize=8, color="grey")
    ax.set_ylim(0, highest * 1.15)
    ax.set(xlabel="concurrent callers", ylabel=key.replace("_per_s", "/s"),
           title=f"{name}: throughput ({result['rows_per_request']} row(s)/request)")
    _caller_axis(ax, result)
    ax.legend(fontsize=8)


def _latency(ax, name: str, result: dict) -> None:
    from matplotlib.ticker import FuncFormatter
    for label, levels in (("server", result["server"]), ("transport floor", result["floor"])):
        concurrency = [lv["concurrency"] for lv in levels]
        ax.plot(concurrency, [lv["p99_ms"] for lv in levels], "o-", label=f"{label} p99")
        ax.plot(concurrency, [lv["p50_ms"] for lv in levels], ".:", label=f"{label} p50")
    ax.set(yscale="log", xlabel="concurrent callers", ylabel="latency (ms)", title=f"{name}: latency")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Between the powers of ten, only 2 and 5 are labelled: every label legible, none overlapping.
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))
    _caller_axis(ax, result)
    ax.legend(fontsize=8)


def _startup(ax, name: str, footprint: dict | None) -> None:
    if not footprint:
        ax.set_axis_off()
        return
    floor = footprint["import_floor"]
    bars = {"import TF+Keras\nalone": floor["seconds"], "server:\ncold start": footprint["serving_s"],
            "server: restart\n(compile cache)": footprint["restart_serving_s"]}
    drawn = ax.bar(list(bars), list(bars.values()), color=["grey", "tab:blue", "tab:green"])
    memory = [floor.get("rss_mb"), (footprint.get("after_warmup") or {}).get("rss_mb"), None]
    for bar, mb in zip(drawn, memory):
        text = f"{bar.get_height():.1f} s" + (f"\n{mb:.0f} MB" if mb else "")
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, max(bars.values()) * 1.3)
    ax.set(ylabel="seconds to SERVING", title=f"{name}: start-up (resident MB after warm-up)")
    ax.tick_params(axis="x", labelsize=8)


def _caller_axis(ax, result: dict) -> None:
    """A log axis labelled with the caller counts themselves (1, 2, 4 ... 64), no 2 x 10^0."""
    from matplotlib.ticker import NullLocator
    levels = [lv["concurrency"] for lv in result["server"]]
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(levels, [str(level) for level in levels])
