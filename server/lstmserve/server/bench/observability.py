"""What metrics, the access log and token authentication cost: the seed model served twice in one run,
once with all three on and once with all off, under the same load generator, levels interleaved."""

from __future__ import annotations

from pathlib import Path

from lstmserve.server.bench import processes

TOKEN = "bench-token-0c5e"
LEVELS = (1, 8, 64)
BOUND = 0.9  # the target: at most 10% fewer requests per second at peak


def bench_observability(path: Path, settings: dict, env: dict, out: Path, request: Path) -> dict:
    """{"plain": levels, "observed": levels, "verdicts": [...]} for the seed model at `path`."""
    (out / "tokens").write_text(TOKEN + "\n")
    observed = ["--metrics-port", str(_free_port()), "--access-log", str(out / "access.jsonl"),
                "--auth-token-file", str(out / "tokens")]
    result: dict = {"plain": [], "observed": []}
    with processes.real_server("seed", path, [], env, out / "plain.server.log") as plain, \
            processes.real_server("seed", path, observed, env, out / "observed.server.log") as watched:
        command = processes.python(
            "lstmserve.server.bench.load", "--target", f"plain={plain.address}",
            "--target", f"observed={watched.address}",
            "--request", str(request), "--model", "seed", "--token", TOKEN,
            "--levels", *map(str, settings.get("observability_levels", LEVELS)),
            "--window", str(settings["window"]), "--stable-windows", str(settings["stable_windows"]),
            "--max-windows", str(settings["max_windows"]))
        processes.load_levels(command, env, timeout=600, on_line=lambda line: _record(result, line),
                              between_levels=lambda level: None)
    result["verdicts"] = verdicts(result)
    return result


def verdicts(result: dict) -> list[dict]:
    plain, observed = result["plain"], result["observed"]
    rate = "requests_per_s"
    peak = max(level[rate] for level in observed) / max(level[rate] for level in plain)
    at = {level["concurrency"]: level for level in plain}
    first = [level for level in observed if level["concurrency"] in at]
    p50 = min(first, key=lambda level: level["concurrency"])
    return [
        {"target": "peak req/s with metrics, access log and auth vs without", "value": peak,
         "bound": f">= {BOUND}", "met": peak >= BOUND},
        {"target": f"p50 at concurrency {p50['concurrency']}: with vs without (ms)",
         "value": p50["p50_ms"] - at[p50["concurrency"]]["p50_ms"], "bound": "reported", "met": True},
    ]


def table(result: dict) -> str:
    plain = {level["concurrency"]: level for level in result["plain"]}
    lines = ["== seed: metrics + access log + token auth (observed) vs all off (plain) ==",
             f"{'conc':>4} | {'plain req/s':>11} {'p50 ms':>7} | {'observed req/s':>14} {'p50 ms':>7} "
             f"{'err':>4}"]
    for level in result["observed"]:
        base = plain.get(level["concurrency"], {})
        lines.append(f"{level['concurrency']:>4} | {base.get('requests_per_s', 0):>11.0f} "
                     f"{base.get('p50_ms', 0):>7.2f} | {level['requests_per_s']:>14.0f} "
                     f"{level['p50_ms']:>7.2f} {sum(level['errors'].values()):>4}")
    return "\n".join(lines + verdict_lines(result["verdicts"]))


def verdict_lines(verdicts: list[dict]) -> list[str]:
    return [f"  {verdict['target']}: {verdict['value']:.3f} ({verdict['bound']})"
            f"{'' if verdict['met'] else '  NOT MET'}" for verdict in verdicts]


def _record(result: dict, line: dict) -> None:
    result[line.pop("target")].append(line)


def _free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
