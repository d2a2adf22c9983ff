"""The benchmark's verdict: ratios against the limits measured in the same run, a table and a plot."""

from __future__ import annotations

from pathlib import Path
from statistics import median

TARGETS = {  # name: (what is compared, bound, which models)
    "peak requests/s vs transport floor": (">=", 0.8, ("seed",)),
    "p50 at concurrency 1 minus floor p50 (ms)": ("<=", 0.3, ("seed",)),
    "peak samples/s vs in-process best": (">=", 0.7, ("heavy",)),
    "errors at any level": ("<=", 0, ("seed", "heavy")),
    "p99 / p50 at concurrency 64": ("<=", 3.0, ("seed", "heavy")),
}


def evaluate(model: str, result: dict) -> list[dict]:
    """Every target that applies to `model`, with the measured value and whether it is met."""
    values = measured(result)
    verdicts = []
    for name, (op, bound, models) in TARGETS.items():
        value = values.get(name)
        if model not in models or value is None:
            continue
        met = value >= bound if op == ">=" else value <= bound
        verdicts.append({"target": name, "value": value, "bound": f"{op} {bound}", "met": met})
    return verdicts


def measured(result: dict) -> dict:
    server, floor = result["server"], result["floor"]
    at = {level["concurrency"]: level for level in server}
    floor_at = {level["concurrency"]: level for level in floor}
    best, rate = reference_samples_per_s(result["baseline"]), "requests_per_s"
    values = {
        "peak requests/s vs transport floor": _peak(server, rate) / _peak(floor, rate),
        "peak samples/s vs in-process best": _peak(server, "samples_per_s") / best,
        "errors at any level": sum(sum(level["errors"].values()) for level in server),
    }
    if 1 in at and 1 in floor_at:
        values["p50 at concurrency 1 minus floor p50 (ms)"] = at[1]["p50_ms"] - floor_at[1]["p50_ms"]
    if 64 in at:
        values["p99 / p50 at concurrency 64"] = at[64]["p99_ms"] / at[64]["p50_ms"]
    return values


def reference_samples_per_s(baseline: dict) -> float:
    """The in-process limit over the whole sweep: the median of its measures before and between levels."""
    return float(median(baseline_measures(baseline)))


def baseline_measures(baseline: dict) -> list[float]:
    return [baseline["best_samples_per_s"], *(r["samples_per_s"] for r in baseline.get("rechecks", []))]


def _peak(levels: list[dict], key: str) -> float:
    return max(level[key] for level in levels)


def table(model: str, result: dict) -> str:
    """Floor and server side by side per concurrency level, then the baseline and the verdicts."""
    floor = {level["concurrency"]: level for level in result["floor"]}
    lines = [f"== {model}: {result['rows_per_request']} row(s) per request ==",
             f"{'conc':>4} | {'floor req/s':>11} {'p50 ms':>7} | {'server req/s':>12} {'samples/s':>10} "
             f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'err':>4} {'batch':>11} {'gen cpu':>7}"]
    for level in result["server"]:
        f = floor.get(level["concurrency"], {})
        batches = level.get("batches", {})
        lines.append(
            f"{level['concurrency']:>4} | {f.get('requests_per_s', 0):>11.0f} {f.get('p50_ms', 0):>7.2f} | "
            f"{level['requests_per_s']:>12.0f} {level['samples_per_s']:>10.0f} {level['p50_ms']:>7.2f} "
            f"{level['p90_ms']:>7.2f} {level['p99_ms']:>7.2f} {sum(level['errors'].values()):>4} "
            f"{batches.get('mean_rows', 0):>5.1f}/{batches.get('max_rows', 0):<5} "
            f"{level['generator_cpu']:>6.0%}")
    base = result["baseline"]
    measures = baseline_measures(base)  # the first measure and every recheck
    lines.append(f"in-process: batch-1 call p50 {base['batch1_p50_ms']:.3f} ms, best "
                 f"{reference_samples_per_s(base):.0f} samples/s at batch {base['best_batch']} (median of "
                 f"{len(measures)} measures across the sweep, {min(measures):.0f}-{max(measures):.0f})")
    for verdict in result["verdicts"]:
        mark = "met" if verdict["met"] else "NOT met"
        lines.append(f"  {verdict['target']}: {verdict['value']:.3g} (target {verdict['bound']}): {mark}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path | None:
    """Throughput and p99 against concurrency, server beside floor and baseline; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = results["models"]
    figure, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    for row, (name, result) in zip(axes, models.items()):
        _throughput(row[0], name, result)
        _latency(row[1], name, result)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _throughput(ax, name: str, result: dict) -> None:
    key = "requests_per_s" if result["rows_per_request"] == 1 else "samples_per_s"
    for label, levels in (("server", result["server"]), ("transport floor", result["floor"])):
        ax.plot([lv["concurrency"] for lv in levels], [lv[key] for lv in levels], "o-", label=label)
    base = result["baseline"]
    if key == "requests_per_s":  # one row per request: the model's own call rate is the limit to draw
        ax.axhline(1000 / base["batch1_p50_ms"], ls="--", c="grey", label="in-process batch-1 calls/s")
    else:
        ax.axhline(reference_samples_per_s(base), ls="--", c="grey", label="in-process best samples/s")
    ax.set(xscale="log", xlabel="concurrent callers", ylabel=key.replace("_per_s", "/s"),
           title=f"{name}: throughput ({result['rows_per_request']} row(s)/request)")
    ax.set_xticks([lv["concurrency"] for lv in result["server"]],
                  [str(lv["concurrency"]) for lv in result["server"]])
    ax.legend()


def _latency(ax, name: str, result: dict) -> None:
    for label, levels in (("server", result["server"]), ("transport floor", result["floor"])):
        concurrency = [lv["concurrency"] for lv in levels]
        ax.plot(concurrency, [lv["p99_ms"] for lv in levels], "o-", label=f"{label} p99")
        ax.plot(concurrency, [lv["p50_ms"] for lv in levels], ".:", label=f"{label} p50")
    ax.set(xscale="log", yscale="log", xlabel="concurrent callers", ylabel="latency (ms)",
           title=f"{name}: latency")
    ax.set_xticks([lv["concurrency"] for lv in result["server"]],
                  [str(lv["concurrency"]) for lv in result["server"]])
    ax.legend()


def v2_summary(result: dict) -> str:
    """The Open Inference Protocol's ModelInfer beside lstmserve.v1's Predict: same server, same inputs."""
    if not result.get("v2"):
        return ""
    v1 = {level["concurrency"]: level for level in result["server"]}
    lines = ["V2 ModelInfer vs lstmserve.v1 Predict (same server, same inputs):"]
    for level in result["v2"]:
        base = v1.get(level["concurrency"])
        if base:
            ratio = level["requests_per_s"] / base["requests_per_s"]
            lines.append(f"  c={level['concurrency']:<3} {level['requests_per_s']:8.0f} req/s vs "
                         f"{base['requests_per_s']:8.0f} ({ratio:.2f}x), "
                         f"p50 {level['p50_ms']:.2f} vs {base['p50_ms']:.2f} ms, errors "
                         f"{sum(level['errors'].values())}")
    peak = _peak(result["v2"], "requests_per_s") / _peak(result["server"], "requests_per_s")
    lines.append(f"  peak ratio {peak:.2f}x")
    return "\n".join(lines)
