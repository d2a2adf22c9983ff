"""`lstmserve train`: a built-in demo, or a CSV of series or labelled sequences."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="fit a model and write it as one .h5 file",
        description="Fit a sequence model and save it, with what serving needs (its data preparation "
        "included), as a single .h5 file. Forecasting by default; --label makes it classification.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", choices=["seed", "classifier"], help="train a built-in demo")
    source.add_argument("--data", type=Path, metavar="FILE.csv", help="train on a CSV with a header row")
    parser.add_argument("--output", "-o", type=Path, required=True, help="where to write the .h5")
    _add_data_options(parser.add_argument_group("data"))
    _add_run_options(parser.add_argument_group("training"))
    parser.set_defaults(run=run_train)


def _add_data_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--target", help="column to forecast (default: the first non-date column)")
    group.add_argument("--features", type=_columns, help="comma-separated input columns (default: all "
                       "but the date column; the target is always an input)")
    group.add_argument("--date", help="date/index column to ignore (default: the first column when it "
                       "holds dates or text)")
    group.add_argument("--label", help="label column: makes this sequence classification")
    group.add_argument("--group", help="column naming each row's sequence (one row per timestep); "
                       "without it each row is one sequence of its numeric cells")
    group.add_argument("--timesteps", type=int, default=6, help="prepared steps in per window (default 6)")
    group.add_argument("--horizon", type=int, default=1, help="future steps out per window (default 1)")
    group.add_argument("--season", type=int, help="season length (default: 12 for monthly dates, "
                       "4 for quarterly)")
    group.add_argument("--difference", default="auto", metavar="LAGS",
                       help="'auto' (the season's lag, else 1), 'none', or lags like '1', '12', '1,season'")
    group.add_argument("--scaling", choices=["standard", "minmax", "none"], default="standard",
                       help="per-feature scaling fitted on training rows (default standard)")
    group.add_argument("--log", action="store_true", help="take logs first (values must be > 0)")


def _add_run_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--validate", action="store_true", help="hold out the last part of the series "
                       "(a stratified part for classification) and compare with baselines first")
    group.add_argument("--holdout", type=float, default=0.2, help="rows (>= 1) or fraction (< 1) held "
                       "out by --validate (default 0.2)")
    group.add_argument("--no-refit", dest="refit", action="store_false",
                       help="save the validated model instead of refitting on all rows")
    group.add_argument("--epochs", type=int, help="maximum epochs (default: the recipe's)")
    group.add_argument("--units", type=int, help="LSTM units (default: the recipe's)")
    group.add_argument("--seed", type=int, default=1, help="random seed (reproducible training)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    group.add_argument("--report", type=Path, metavar="PATH", help="write every figure as JSON")
    group.add_argument("--plot", type=Path, metavar="PATH", help="PNG of validation forecasts against "
                       "actuals (a confusion matrix for classification); needs --validate")


def _columns(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run_train(args: argparse.Namespace) -> int:
    # TensorFlow reads its C++ log level once, at import: set here, in the entry point, before it loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.demo is not None:
        return _run_demo(args)
    from lstmserve.trainer import pipeline
    from lstmserve.trainer.data import DataError
    from lstmserve.trainer.fitting import deterministic
    from lstmserve.trainer.training_report import summary, write_json

    deterministic()
    names = ("data", "output", "target", "features", "date", "label", "group", "timesteps", "horizon",
             "season", "difference", "scaling", "log", "validate", "holdout", "refit", "plot", "epochs",
             "units", "seed")
    options = pipeline.Options(**{name: getattr(args, name) for name in names},
                               verbose=0 if args.quiet else 1)
    try:
        report = pipeline.run(options)
    except DataError as error:
        print(f"lstmserve train: {error}", file=sys.stderr)
        return 2
    if args.report:
        write_json(args.report, report)
    print(summary(report))
    print(f"wrote {report['output']}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from lstmserve.trainer.demos import DEMOS
    options = {"seed": args.seed, "verbose": 0 if args.quiet else 2}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    result = DEMOS[args.demo](args.output, **options)
    print(f"{result.summary}; wrote {result.path}")
    return 0
