"""What metrics, the access log and token authentication cost: the seed model served twice in one run,
once with all three on and once with all off, under the same load generator.

This machine is shared: the same plain server's rate at one caller was seen to move from 650 to 1,130
requests/s between two parts of one run, far more than the 10% to be judged. So each level is measured
in ROUNDS rounds, the two servers back to back in each (the order alternating), and a level's ratio is
the median of its rounds' ratios: drift between rounds cancels, only what lies between the two servers
of a round remains. Beside it, each server's CPU time per answered call in the same windows: at peak a
server is bound by its CPU, and CPU time is what a busy machine stretches least.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

from lstmserve.server.bench import processes

TOKEN = "bench-token-0c5e"
LEVELS = (1, 8, 64)
ROUNDS = 5
BOUND = 0.9  # the target: at most 10% fewer requests per second at peak


def bench_observability(path: Path, settings: dict, env: dict, out: Path, request: Path) -> dict:
    """{"plain": lines, "observed": lines, "levels": [...], "verdicts": [...]} for the seed model at
    `path` (a line per level and round)."""
    (out / "tokens").write_text(TOKEN + "\n")
    observed = ["--metrics-port", str(processes.free_port()), "--access-log", str(out / "access.jsonl"),
                "--auth-token-file", str(out / "tokens")]
    result: dict = {"plain": [], "observed": []}
    with processes.real_server("seed", path, [], env, out / "plain.server.log") as plain, \
            processes.real_server("seed", path, observed, env, out / "observed.server.log") as watched:
        command = processes.python(
            "lstmserve.server.bench.load", "--target", f"plain={plain.address}",
            "--target", f"observed={watched.address}", "--pid", f"plain={plain.pid}",
            "--pid", f"observed={watched.pid}", "--rounds", str(settings.get("observability_rounds", ROUNDS)),
            "--request", str(request), "--model", "seed", "--token", TOKEN,
            "--levels", *map(str, settings.get("observability_levels", LEVELS)),
            "--window", str(settings["window"]), "--stable-windows", str(settings["stable_windows"]),
            "--max-windows", str(settings["max_windows"]))
        processes.load_levels(command, env, timeout=1200, on_line=lambda line: _record(result, line),
                              between_levels=lambda level: None)
    result["levels"] = paired_levels(result)
    result["verdicts"] = verdicts(result["levels"])
    return result


def paired_levels(result: dict) -> list[dict]:
    """Per level: each server's median rate, p50 and CPU per call over the rounds, and the medians of
    the rounds' ratios (observed / plain)."""
    levels = []
    for concurrency in sorted({line["concurrency"] for line in result["plain"]}):
        rounds = _rounds(result, concurrency)
        level = {"concurrency": concurrency, "rounds": len(rounds)}
        for key in ("requests_per_s", "p50_ms", "server_cpu_us_per_call"):
            pairs = [(p[key], o[key]) for p, o in rounds if key in p and key in o]
            if pairs:
                level[f"plain_{key}"] = median(p for p, _ in pairs)
                level[f"observed_{key}"] = median(o for _, o in pairs)
                level[f"ratio_{key}"] = median(o / p for p, o in pairs if p)
        level["errors"] = sum(sum(o["errors"].values()) for _, o in rounds)
        levels.append(level)
    return levels


def _rounds(result: dict, concurrency: int) -> list[tuple[dict, dict]]:
    plain = {line["round"]: line for line in result["plain"] if line["concurrency"] == concurrency}
    observed = {line["round"]: line for line in result["observed"] if line["concurrency"] == concurrency}
    return [(plain[r], observed[r]) for r in sorted(plain) if r in observed]


def verdicts(levels: list[dict]) -> list[dict]:
    peak = max(levels, key=lambda level: level["plain_requests_per_s"])
    first = min(levels, key=lambda level: level["concurrency"])
    cpu = peak.get("ratio_server_cpu_us_per_call")
    found = [
        {"target": f"req/s with metrics, access log and auth vs without, at the peak (concurrency "
                   f"{peak['concurrency']}; median of {peak['rounds']} paired rounds)",
         "value": peak["ratio_requests_per_s"], "bound": f">= {BOUND}",
         "met": peak["ratio_requests_per_s"] >= BOUND},
        {"target": f"p50 at concurrency {first['concurrency']}: with minus without (ms)",
         "value": first["observed_p50_ms"] - first["plain_p50_ms"], "bound": "reported", "met": True},
        {"target": "errors", "value": sum(level["errors"] for level in levels), "bound": "<= 0",
         "met": not any(level["errors"] for level in levels)},
    ]
    if cpu is not None:
        found.insert(1, {"target": f"server CPU per call with vs without, at the peak (median of "
                                   f"{peak['rounds']} paired rounds)", "value": cpu, "bound": "reported",
                         "met": True})
    return found


def table(result: dict) -> str:
    lines = ["== seed: metrics + access log + token auth (observed) vs all off (plain); medians of paired "
             "rounds ==",
             f"{'conc':>4} | {'plain req/s':>11} {'p50 ms':>7} {'cpu us':>6} | {'observed req/s':>14} "
             f"{'p50 ms':>7} {'cpu us':>6} | {'req/s ratio':>11} {'cpu ratio':>9} {'err':>4}"]
    for level in result["levels"]:
        sides = [f"{level[f'{side}_requests_per_s']:>{width}.0f} {level[f'{side}_p50_ms']:>7.2f} "
                 f"{level.get(f'{side}_server_cpu_us_per_call', 0):>6.0f}"
                 for side, width in (("plain", 11), ("observed", 14))]
        lines.append(f"{level['concurrency']:>4} | {sides[0]} | {sides[1]} | "
                     f"{level['ratio_requests_per_s']:>11.3f} "
                     f"{level.get('ratio_server_cpu_us_per_call', 0):>9.3f} {level['errors']:>4}")
    return "\n".join(lines + verdict_lines(result["verdicts"]))


def verdict_lines(verdicts: list[dict]) -> list[str]:
    return [f"  {verdict['target']}: {verdict['value']:.3f} ({verdict['bound']})"
            f"{'' if verdict['met'] else '  NOT MET'}" for verdict in verdicts]


def _record(result: dict, line: dict) -> None:
    result[line.pop("target")].append(line)
