"""Run the benchmark suite: ``python -m benchmarks.run [--quick] [--only W1,W3] [--scheduler ADDR]``.

Prints one table of medians over repeats and writes the same results as JSON.
Every comparison is a ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import accuracy, fill, one_pass, targets, workloads
from benchmarks.common import cpu_count, median, with_ratios

W1_VARIANTS: dict[str, dict[str, Any]] = {
    # label -> extra AsyncReservoir keyword arguments; a variant the installed version does not
    # accept prints a note row instead of a measurement
    "dask_reservoir defaults": {},
    "dask_reservoir defaults, client=None (embedded cluster)": {"client": None, "nb_workers": 2},
    "dask_reservoir max_jobs_at_once=32": {"max_jobs_at_once": 32},
    "dask_reservoir loader='process'": {"loader": "process"},
    "dask_reservoir loader='thread'": {"loader": "thread"},
    "dask_reservoir prefetch_batches=0": {"prefetch_batches": 0},
    "dask_reservoir client=None, loader='process'": {"client": None, "nb_workers": 2, "loader": "process"},
    "GIL-holding step, loader='thread'": {"loader": "thread", "hold_gil": True},
    "GIL-holding step, loader='process'": {"loader": "process", "hold_gil": True},
    "dask_reservoir max_reservoir_replacement_size=16": {"max_reservoir_replacement_size": 16},
    "dask_reservoir deterministic=True, max_reservoir_replacement_size=16": {
        "deterministic": True,
        "max_reservoir_replacement_size": 16,
    },
}
FULL: dict[str, dict[str, Any]] = {
    "W1": {
        "rows": 2000,
        "delay": 0.02,
        "workers": 2,
        "reservoir": 256,
        "minimum": 64,
        "batch": 32,
        "step": 0.005,
        "seconds": 10.0,
        "capacity": 2 / 0.02,
        "variants": W1_VARIANTS,
        "torchdata_method": "thread",
    },
    "W2": {"entries": 4096, "batch": 64, "batches": 2000, "source_factor": 8},
    "W3": {
        "rows": 200_000,
        "seconds": 4.0,
        "in_flight": 32,
        "best_tiny": 512,
        "best_image": 128,
        "monai_rows": 50_000,
        "max_jobs": [32, 512, 2048],
    },
    "W4": {"sizes": [1_000, 10_000, 100_000], "batches": 3000},
    "W5": {"entries": 100_000},
    "W6": {
        "sizes": [1_000, 10_000, 100_000],
        "calls": 200,
        "fill_rows": 1_000_000,
        "row_by_row_rows": 100_000,
        "chunk": 50_000,
        "index_sizes": [100_000, 1_000_000, 10_000_000],
    },
    "W7": {"rows": 2000, "delay": 0.02, "workers": 2, "reservoir": 256, "minimum": 64, "epochs": 20},
    "W8": {"entries": 100_000, "seconds": 8.0},
    "W9": {"uids": 10_000_000, "settle": 1.0},
    "W10": {"rows": 2000, "delay": 0.02, "minimum": 64, "batch": 32},
    "W11": {"rows": 1_000_000, "chunk": 50_000},
    "W12": {
        "delay": 0.005,
        "reservoir": 400,
        "minimum": 64,
        "batch": 32,
        "lr": 0.01,
        "eval_every": 50,
        "target": 0.95,
        "cap": 60.0,
        "replace_rate": 0.2,
        "peers": True,
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "W1": {**FULL["W1"], "rows": 200, "minimum": 16, "reservoir": 32, "seconds": 0.5},
    "W2": {"entries": 256, "batch": 16, "batches": 50, "source_factor": 8},
    "W3": {
        "rows": 2000,
        "seconds": 0.3,
        "in_flight": 32,
        "best_tiny": 64,
        "best_image": 16,
        "monai_rows": 2000,
        "max_jobs": [32],
    },
    "W4": {"sizes": [100, 1000], "batches": 50},
    "W5": {"entries": 2000},
    "W6": {
        "sizes": [100, 1000],
        "calls": 20,
        "fill_rows": 20_000,
        "row_by_row_rows": 2_000,
        "chunk": 5_000,
        "index_sizes": [1000],
    },
    "W7": {"rows": 200, "delay": 0.005, "workers": 2, "reservoir": 32, "minimum": 8, "epochs": 3},
    "W8": {"entries": 2000, "seconds": 1.0},
    "W9": {"uids": 100_000, "settle": 1.0},
    "W10": {"rows": 200, "delay": 0.005, "minimum": 16, "batch": 16},
    "W11": {"rows": 20_000, "chunk": 5_000},
    "W12": {**FULL["W12"], "cap": 10.0, "peers": False},
}
RUNNERS = {
    "W1": workloads.w1,
    "W2": workloads.w2,
    "W3": workloads.w3,
    "W4": workloads.w4,
    "W5": workloads.w5,
    "W6": lambda cfg, scheduler: workloads.w6(cfg, scheduler) + fill.w6_fill(cfg, scheduler),
    "W7": workloads.w7,
    "W8": workloads.w8,
    "W9": workloads.w9,
    "W10": one_pass.w10,
    "W11": one_pass.w11,
    "W12": accuracy.w12,
}


def _merge(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Median of each numeric metric over repeats, row by row."""
    merged = []
    for rows in zip(*runs, strict=True):
        out: dict[str, Any] = {"system": rows[0]["system"]}
        for key in rows[0]:
            if key == "system":
                continue
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            out[key] = median(values) if values else rows[0][key]
        merged.append(out)
    return merged


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(results: dict[str, list[dict[str, Any]]], out: Any = None) -> None:
    out = out or sys.stdout
    for workload, rows in results.items():
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("system", "note")]
        keys += ["note"] if any("note" in r for r in rows) else []
        header = ["system", *keys]
        table = [header] + [
            [_fmt(r.get(k, "")) if k != "system" else r["system"] for k in header] for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        print(f"\n{workload}", file=out)
        for i, row in enumerate(table):
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)), file=out)
            if i == 0:
                print("  " + "  ".join("-" * w for w in widths), file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--only", default=",".join(RUNNERS), help="comma-separated workloads")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per workload (default 3, quick 1)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="run on this scheduler instead of starting one (a LocalCluster, or for W8 subprocesses)",
    )
    parser.add_argument("--json", default="bench-results.json", help="where to write the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("dask_reservoir").setLevel(logging.ERROR)
    configs = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in RUNNERS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(RUNNERS)}")
    results: dict[str, list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for w in chosen:
        runs = [RUNNERS[w](configs[w], args.scheduler) for _ in range(repeats)]
        results[w] = with_ratios(_merge(runs))
        print(f"{w} done after {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": cpu_count(),
        "processor": platform.processor(),
        "numpy": np.__version__,
        "repeats": repeats,
        "quick": args.quick,
    }
    print(
        f"dask_reservoir benchmarks ({'quick' if args.quick else 'full'}, medians of {repeats}) on {machine['platform']}, {machine['cpus']} CPUs"
    )
    print_table(results)
    checked = targets.evaluate(results)
    targets.print_targets(checked, sys.stdout)
    report = {
        "machine": machine,
        "configs": {w: configs[w] for w in chosen},
        "results": results,
        "targets": checked,
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
