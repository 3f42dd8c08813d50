"""Command line: ``python -m dask_reservoir demo`` and the ``dask-reservoir`` script.

The benchmark suite lives in the source tree (``benchmarks/``, not installed with the
package): run it from a checkout with ``make bench`` or ``python -m benchmarks.run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Bad options: one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(convert: Callable[[str], float], minimum: float, expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, at least ``minimum``, else "expected ..., got ..."."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_seconds = _number(float, 0, "seconds (a number >= 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line."""
    parser = _Parser(
        prog="dask-reservoir",
        description="An asynchronous sample reservoir on dask.distributed.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo",
        help="stream batches from a slow loader and print throughput and stats",
        description="Run a slow loader through a reservoir and print throughput and stats. "
        "Starts an embedded LocalCluster unless --scheduler is given.",
    )
    demo.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running dask scheduler, e.g. tcp://127.0.0.1:8786",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="worker processes of the embedded cluster (default 2)",
    )
    demo.add_argument("--rows", type=_positive_int, default=400, help="source rows (default 400)")
    demo.add_argument("--delay", type=_seconds, default=0.02, help="seconds each job sleeps (default 0.02)")
    demo.add_argument("--reservoir", type=_positive_int, default=128, help="reservoir capacity (default 128)")
    demo.add_argument(
        "--minimum", type=_positive_int, default=32, help="entries before the first epoch (default 32)"
    )
    demo.add_argument("--batch-size", type=_positive_int, default=16, help="entries per batch (default 16)")
    demo.add_argument("--epochs", type=_positive_int, default=100, help="epochs to run (default 100)")
    demo.add_argument(
        "--step", type=_seconds, default=0.005, help="seconds of 'training' per batch (default 0.005)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.minimum > args.reservoir:
        print(
            f"dask-reservoir: error: --minimum ({args.minimum}) must be <= --reservoir ({args.reservoir})",
            file=sys.stderr,
        )
        return 2
    from dask_reservoir.demo import run_demo

    try:
        run_demo(
            rows=args.rows,
            delay=args.delay,
            workers=args.workers,
            scheduler=args.scheduler,
            reservoir=args.reservoir,
            minimum=args.minimum,
            batch_size=args.batch_size,
            epochs=args.epochs,
            step=args.step,
        )
    except OSError as exc:
        print(f"dask-reservoir: error: {exc}", file=sys.stderr)
        return 1
    return 0
