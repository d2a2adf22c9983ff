"""`lstmserve train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="fit a model and write it as one .h5 file",
                                 description="Fit a sequence model and save it, with what serving "
                                 "needs, as a single .h5 file.")
    parser.add_argument("--demo", choices=["seed", "classifier"], help="train a built-in demo")
    parser.add_argument("--output", "-o", type=Path, required=True, help="where to write the .h5")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (reproducible training)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.demo is None:
        print("lstmserve train: give --demo seed|classifier", file=sys.stderr)
        return 2
    from lstmserve.trainer.demos import DEMOS
    options = {"seed": args.seed, "verbose": 0 if args.quiet else 2}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    result = DEMOS[args.demo](args.output, **options)
    print(f"{result.summary}; wrote {result.path}")
    return 0
