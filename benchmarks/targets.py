"""The targets of issues 10, 11, 18, 19 and 20, checked against the rows a run measured."""

from __future__ import annotations

import fnmatch
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    """``metric`` of the first row of ``workload`` whose system matches one of ``systems`` (in
    order of preference, fnmatch patterns), compared with ``threshold`` by ``op``."""

    name: str
    workload: str
    systems: tuple[str, ...]
    metric: str
    op: str
    threshold: float
    issue: str = "10"
    """The issue that set the target; the printed targets are grouped by it."""


W1_DEFAULTS = ("dask_reservoir defaults",)
TARGETS = (
    Target("W1 defaults: batch rate / step-limited", "W1", W1_DEFAULTS, "step_rate_fraction", ">=", 0.97),
    Target("W1 defaults: consumer wait fraction", "W1", W1_DEFAULTS, "wait_fraction", "<", 0.02),
    Target("W1 defaults: stall p99 (ms)", "W1", W1_DEFAULTS, "stall_p99_ms", "<", 2.0),
    Target(
        "W1 defaults: fresh UIDs / loaders' rate", "W1", W1_DEFAULTS, "fresh_fraction_of_loaders", ">=", 0.95
    ),
    Target(
        "W1 defaults: first batch / floor",
        "W1",
        ("dask_reservoir defaults, client=None*", *W1_DEFAULTS),
        "first_batch_vs_floor",
        "<=",
        1.5,
    ),
    Target(
        "W2 under load / numpy take limit", "W2", ("dask_reservoir under load*",), "ratio_to_numpy", ">=", 0.6
    ),
    Target(
        "W2 paused / numpy take limit", "W2", ("dask_reservoir, loading paused",), "ratio_to_numpy", ">=", 0.8
    ),
    Target(
        "W3 default fill of a 1 ms loader / raw dask loop",
        "W3",
        ("dask_reservoir defaults, 1 ms rows",),
        "ratio_to_raw",
        ">=",
        2.0,
    ),
    Target(
        "W6 iter() at 1e5 entries, 64 changed per epoch, median (us)",
        "W6",
        ("dask_reservoir, 1e+05 entries, 64 changed per epoch",),
        "iter_us_median",
        "<=",
        1000.0,
    ),
    Target(
        "W6 vectorized fill, batched=True / map_partitions (issue 11)",
        "W6",
        ("vectorized fill: batched=True",),
        "x_map_partitions",
        ">=",
        0.5,
        issue="11",
    ),
    Target(
        "W6 vectorized fill, batched=True rows/s (issue 11)",
        "W6",
        ("vectorized fill: batched=True",),
        "rows_per_s",
        ">=",
        1_000_000.0,
        issue="11",
    ),
    Target(
        "W3 tiny rows packed / MONAI CacheDataset 2 threads",
        "W3",
        ("dask_reservoir packed*, tiny rows",),
        "ratio_to_monai",
        ">=",
        0.5,
    ),
    # issue 19: the loop never waits
    Target("W1 defaults: consumer wait fraction", "W1", W1_DEFAULTS, "wait_fraction", "<", 0.02, issue="19"),
    Target("W1 defaults: stall p99 (ms)", "W1", W1_DEFAULTS, "stall_p99_ms", "<", 2.0, issue="19"),
    Target(
        "W1 defaults: batch rate / step-limited",
        "W1",
        W1_DEFAULTS,
        "step_rate_fraction",
        ">=",
        0.97,
        issue="19",
    ),
    Target(
        "W1 client=None: first batch / pure loading time",
        "W1",
        ("dask_reservoir defaults, client=None*",),
        "first_batch_vs_loading",
        "<=",
        1.5,
        issue="19",
    ),
    Target(
        "W3 tiny rows max_jobs_at_once=512 / MONAI CacheDataset 2 threads",
        "W3",
        ("dask_reservoir max_jobs_at_once=512, tiny rows",),
        "ratio_to_monai",
        ">=",
        1.0,
        issue="19",
    ),
    Target(
        "W3 tiny rows max_jobs_at_once=2048 / MONAI CacheDataset 2 threads",
        "W3",
        ("dask_reservoir max_jobs_at_once=2048, tiny rows",),
        "ratio_to_monai",
        ">=",
        1.0,
        issue="19",
    ),
    Target(
        "W3 tiny rows max_jobs_at_once=32 / MONAI CacheDataset 2 threads",
        "W3",
        ("dask_reservoir max_jobs_at_once=32, tiny rows",),
        "ratio_to_monai",
        ">=",
        0.5,
        issue="19",
    ),
)


W9_INT = ("int64 UIDs, 1e+07 rows",)
W9_STR = ("Arrow string UIDs, 1e+07 rows",)
TARGETS += (
    # issue 18, the columnar core: client CPU per entry, epoch start, serving, memory, state at scale
    Target(
        "W8 row function rows_per_job=2048: client CPU per entry (us)",
        "W8",
        ("row function, rows_per_job=2048",),
        "cpu_us_per_entry",
        "<=",
        1.0,
        issue="18",
    ),
    Target(
        "W8 row function defaults: client CPU per entry (us) (report)",
        "W8",
        ("row function, defaults",),
        "cpu_us_per_entry",
        "<=",
        1.0,
        issue="18",
    ),
    Target(
        "W6 iter() at 1e5 entries, 64 changed per epoch, median (us), issue 18",
        "W6",
        ("dask_reservoir, 1e+05 entries, 64 changed per epoch",),
        "iter_us_median",
        "<=",
        300.0,
        issue="18",
    ),
    Target(
        "W2 under load (defaults) / numpy take limit",
        "W2",
        ("dask_reservoir under load (defaults)",),
        "ratio_to_numpy",
        ">=",
        0.45,
        issue="18",
    ),
    Target(
        "W2 paused / numpy take limit, issue 18",
        "W2",
        ("dask_reservoir, loading paused",),
        "ratio_to_numpy",
        ">=",
        0.85,
        issue="18",
    ),
    Target(
        "W5 1 KB entries: overhead bytes per entry",
        "W5",
        ("dask_reservoir, * entries of 1 KB",),
        "overhead_bytes_per_entry",
        "<=",
        64.0,
        issue="18",
    ),
    Target(
        "W5 16 B entries: overhead bytes per entry",
        "W5",
        ("dask_reservoir, * entries of 16 B",),
        "overhead_bytes_per_entry",
        "<=",
        64.0,
        issue="18",
    ),
    Target(
        "W3 tiny rows defaults / MONAI CacheDataset 2 threads",
        "W3",
        ("dask_reservoir defaults, tiny rows",),
        "ratio_to_monai",
        ">=",
        1.0,
        issue="18",
    ),
    Target("W9 state_dict() at 1e7 int64 UIDs (s)", "W9", W9_INT, "state_dict_s", "<=", 1.0, issue="18"),
    Target("W9 state_dict() at 1e7 string UIDs (s)", "W9", W9_STR, "state_dict_s", "<=", 1.0, issue="18"),
    Target(
        "W9 load_state_dict() at 1e7 int64 UIDs (s)", "W9", W9_INT, "load_state_dict_s", "<=", 1.0, issue="18"
    ),
    Target(
        "W9 load_state_dict() at 1e7 string UIDs (s)",
        "W9",
        W9_STR,
        "load_state_dict_s",
        "<=",
        1.0,
        issue="18",
    ),
    Target(
        "W9 load_state_dict() at 1e7 int64 UIDs: RSS growth (MB)",
        "W9",
        W9_INT,
        "load_rss_mb",
        "<=",
        200.0,
        issue="18",
    ),
    Target(
        "W9 load_state_dict() at 1e7 string UIDs: RSS growth (MB)",
        "W9",
        W9_STR,
        "load_rss_mb",
        "<=",
        200.0,
        issue="18",
    ),
)

W10_WARM = ("warm start, cache=<same dir>",)
TARGETS += (
    # issue 20: the persistent tier (its "W8 warm start" is W10 here), one pass, time to accuracy ("W9": W12)
    Target(
        "W10 warm start: first batch warm / cold",
        "W10",
        W10_WARM,
        "first_batch_vs_cold",
        "<=",
        0.2,
        issue="20",
    ),
    Target(
        "W10 warm start: full reservoir speed-up cold / warm",
        "W10",
        W10_WARM,
        "speedup_vs_cold",
        ">=",
        10.0,
        issue="20",
    ),
    Target(
        "W10 cold start with cache / without cache (full reservoir)",
        "W10",
        ("cold start, cache=<empty dir> (fills it)",),
        "full_vs_no_cache",
        "<=",
        1.1,
        issue="20",
    ),
    Target(
        "W10 warm start: cache bytes read per s / pyarrow read_table loop",
        "W10",
        W10_WARM,
        "read_vs_pyarrow",
        ">=",
        0.5,
        issue="20",
    ),
    Target(
        "W11 passes=1, batched=True rows/s / map_partitions",
        "W11",
        ("passes=1, batched=True (defaults)*",),
        "x_map_partitions",
        ">=",
        0.5,
        issue="20",
    ),
    Target(
        "W12 time to 95 % accuracy: reservoir transform= / in memory",
        "W12",
        ("dask_reservoir transform=*",),
        "vs_in_memory",
        "<=",
        1.5,
        issue="20",
    ),
)


def _measured(target: Target, results: dict[str, list[dict[str, Any]]]) -> tuple[str, float] | None:
    """The matching row's system and value, or None when the run did not measure it."""
    rows = results.get(target.workload, [])
    for pattern in target.systems:
        for row in rows:
            value = row.get(target.metric)
            if fnmatch.fnmatchcase(row["system"], pattern) and isinstance(value, (int, float)):
                if not math.isnan(value):
                    return row["system"], float(value)
    return None


def evaluate(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per target: measured (or None), the target, and whether it was met."""
    records = []
    for t in TARGETS:
        found = _measured(t, results)
        record: dict[str, Any] = {
            "target": t.name,
            "issue": t.issue,
            "metric": t.metric,
            "op": t.op,
            "threshold": t.threshold,
        }
        if found is None:
            record |= {"system": None, "measured": None, "met": None}
        else:
            system, value = found
            record |= {"system": system, "measured": value, "met": OPS[t.op](value, t.threshold)}
        records.append(record)
    return records


def print_targets(records: list[dict[str, Any]], out: Any) -> None:
    width = max(len(r["target"]) for r in records)
    for issue in dict.fromkeys(r["issue"] for r in records):
        print(f"\ntargets (issue {issue})", file=out)
        for r in records:
            if r["issue"] == issue:
                _print_target(r, width, out)


def _print_target(r: dict[str, Any], width: int, out: Any) -> None:
    goal = f"{r['op']} {r['threshold']:g}"
    if r["measured"] is None:
        print(f"  {r['target']:<{width}}  {'-':>8}  {goal:<8}  not measured in this run", file=out)
    else:
        verdict = "met" if r["met"] else "NOT MET"
        print(f"  {r['target']:<{width}}  {r['measured']:>8.3g}  {goal:<8}  {verdict}", file=out)
