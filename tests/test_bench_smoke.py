"""A smoke run of the benchmark suite at tiny sizes: it runs and reports; no timing is asserted."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest

from benchmarks.run import main
from benchmarks.targets import TARGETS

pytestmark = pytest.mark.timeout(240)

NEW_ROWS = {
    "W1": [
        "dask_reservoir defaults",
        "dask_reservoir defaults, client=None (embedded cluster)",
        "dask_reservoir max_jobs_at_once=32",
        "consumer alone (batches already in memory)",
        "first-batch floor: minimum x load / workers + import distributed",
        "dask_reservoir loader='process'",
        "GIL-holding step, loader='process'",
        "dask_reservoir deterministic=True, max_reservoir_replacement_size=16",
    ],
    "W2": [
        "dask_reservoir, loading paused",
        "dask_reservoir under load (defaults)",
        "dask_reservoir under load, loader='process'",
        "numpy take(out=, clip) limit",
    ],
    "W7": ["cold start", "restore() from state_dict()"],
    "W3": ["dask_reservoir defaults, 1 ms rows", "raw dask loop, 1 ms rows, 32 in flight"],
    "W6": [
        f"dask_reservoir, {n} entries, {what}"
        for n in ("1e+02", "1e+03")
        for what in ("64 changed per epoch", "all waiting ingested")
    ],
    "W5": ["dask_reservoir, 2e+03 entries of 1 KB", "dask_reservoir, 2e+03 entries of 16 B"],
    "W8": ["row function, rows_per_job=2048", "row function, defaults", "batched=True, rows_per_job=2048"],
    "W9": ["int64 UIDs, 1e+05 rows", "Arrow string UIDs, 1e+05 rows"],
    "W10": [
        "cold start, no cache",
        "cold start, cache=<empty dir> (fills it)",
        "warm start, cache=<same dir>",
        "pyarrow.parquet.read_table loop over the cache files, this process",
    ],
    "W11": [
        "passes=1, batched=True (defaults), construction to wait_loaded()",
        "dask.dataframe from_pandas().map_partitions().compute()",
    ],
    "W12": [
        "every sample in memory (numpy), shift in the loop",
        "dask_reservoir transform=shift, max_reservoir_samples=400, min 64",
    ],
}
W1_METRICS = (
    "first_batch_s",
    "batches_per_s",
    "step_rate_fraction",
    "wait_fraction",
    "stall_p50_ms",
    "stall_p99_ms",
    "fresh_fraction_of_loaders",
    "cpu_cores",
    "first_batch_vs_floor",
)


def _finite(row: dict[str, Any], key: str) -> bool:
    return isinstance(row.get(key), (int, float)) and math.isfinite(row[key])


def _by_system(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["system"]: row for row in rows}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    capture = tmp_path_factory.mktemp("bench") / "stdout.txt"
    with capture.open("w") as f, contextlib.redirect_stdout(f):
        assert main(["--quick", "--json", str(out)]) == 0
    return capture.read_text(), json.loads(out.read_text())


def test_quick_suite_writes_table_and_json(quick_run: tuple[str, dict[str, Any]]) -> None:
    printed, data = quick_run
    assert "W2" in printed and "numpy take(out=, clip) limit" in printed and "ratio_to_smallest" in printed
    assert set(data["results"]) == {f"W{i}" for i in range(1, 13)}
    assert data["machine"]["quick"] is True
    assert all(row["batches_per_s"] > 0 for row in data["results"]["W2"])
    for workload, systems in NEW_ROWS.items():
        rows = _by_system(data["results"][workload])
        assert set(systems) <= set(rows), (workload, sorted(rows))


def test_w1_rows_report_what_users_feel(quick_run: tuple[str, dict[str, Any]]) -> None:
    rows = _by_system(quick_run[1]["results"]["W1"])
    for system in NEW_ROWS["W1"][:3]:
        assert all(_finite(rows[system], key) for key in W1_METRICS), rows[system]
    alone = rows["consumer alone (batches already in memory)"]
    assert all(_finite(alone, k) for k in ("step_rate_fraction", "wait_fraction", "stall_p99_ms"))
    floor = rows["first-batch floor: minimum x load / workers + import distributed"]
    assert _finite(floor, "import_distributed_s") and floor["first_batch_s"] > floor["import_distributed_s"]
    loading = rows["pure loading time: minimum x load / workers (imports not counted)"]
    assert loading["first_batch_s"] == pytest.approx(floor["first_batch_s"] - floor["import_distributed_s"])
    measured = [r for r in rows.values() if "note" not in r and r not in (floor, alone, loading)]
    assert all(_finite(r, "first_batch_vs_floor") and _finite(r, "first_batch_vs_loading") for r in measured)
    torchdata = next(r for s, r in rows.items() if s.startswith("torchdata.nodes"))
    assert "note" in torchdata or _finite(torchdata, "step_rate_fraction")


def test_new_ratio_columns_are_finite(quick_run: tuple[str, dict[str, Any]]) -> None:
    results = quick_run[1]["results"]
    w2 = _by_system(results["W2"])
    for system in NEW_ROWS["W2"][:2]:
        assert _finite(w2[system], "ratio_to_numpy") and _finite(w2[system], "GB_per_s")
    assert w2["dask_reservoir under load (defaults)"]["entries_ingested_per_s"] >= 0
    w3 = _by_system(results["W3"])
    assert _finite(w3["dask_reservoir defaults, 1 ms rows"], "ratio_to_raw")
    monai = w3["MONAI CacheDataset, 2 threads, tiny rows"]
    if "note" not in monai:
        assert _finite(monai, "samples_per_s")
        packed = next(r for s, r in w3.items() if s.startswith("dask_reservoir packed") and "tiny" in s)
        assert _finite(packed, "ratio_to_monai")
    for row in results["W6"]:
        if row["system"].startswith("dask_reservoir"):
            assert all(_finite(row, k) for k in ("iter_us_median", "iter_us_p90", "epoch_end_us_median"))
    fills = {r["system"]: r for r in results["W6"] if r["system"].startswith("vectorized fill")}
    assert len(fills) == 4 and all(_finite(r, "rows_per_s") and r["rows_per_s"] > 0 for r in fills.values())
    assert _finite(fills["vectorized fill: batched=True"], "x_map_partitions")
    index = [r for r in results["W6"] if r["system"].startswith("source UID index")]
    assert index and all(_finite(r, "ns_per_uid") for r in index)


def test_issue_18_rows_are_finite(quick_run: tuple[str, dict[str, Any]]) -> None:
    results = quick_run[1]["results"]
    assert all(_finite(r, "overhead_bytes_per_entry") for r in results["W5"])
    for row in results["W8"]:
        assert all(_finite(row, k) for k in ("cpu_us_per_entry", "entries_per_s", "iter_ms_median")), row
        assert row["entries_per_s"] > 0
    for row in results["W9"]:
        metrics = ("state_dict_s", "save_s", "load_state_dict_s", "state_dict_rss_mb", "load_rss_mb")
        assert all(_finite(row, k) for k in metrics), row


def test_issue_20_rows_are_measured(quick_run: tuple[str, dict[str, Any]]) -> None:
    results = quick_run[1]["results"]
    w10 = _by_system(results["W10"])
    cold, filling, warm = (w10[s] for s in NEW_ROWS["W10"][:3])
    assert all(
        _finite(r, k) for r in (cold, filling, warm) for k in ("first_batch_s", "full_s", "rows_per_s")
    )
    assert filling["cache_misses"] == 200 and warm["cache_hits"] == 200 and warm["cache_misses"] == 0
    assert all(_finite(warm, k) for k in ("first_batch_vs_cold", "speedup_vs_cold", "read_vs_pyarrow"))
    assert _finite(filling, "full_vs_no_cache")
    w11 = _by_system(results["W11"])
    assert _finite(w11[NEW_ROWS["W11"][0]], "x_map_partitions")
    w12 = _by_system(results["W12"])
    for system in NEW_ROWS["W12"]:
        row = w12[system]  # a note when scikit-learn or torch is missing; a time, or inf (the cap came first)
        assert "note" in row or (row["time_to_target_s"] > 0 and _finite(row, "best_accuracy")), row
    assert all("note" in row for row in results["W12"][2:])  # the peers are skipped in the quick suite


def test_targets_block_lists_every_target(quick_run: tuple[str, dict[str, Any]]) -> None:
    printed, data = quick_run
    assert "targets (issue 10)" in printed and "targets (issue 18)" in printed
    assert "targets (issue 20)" in printed
    records = {r["target"]: r for r in data["targets"]}
    assert set(records) == {t.name for t in TARGETS}
    for name, record in records.items():
        # W12's ratio is inf when the reservoir did not reach the accuracy before the cap
        finite = math.isfinite if not name.startswith("W12") else (lambda v: not math.isnan(v))
        assert record["measured"] is None or (finite(record["measured"]) and record["met"] in (True, False))
    assert (
        records["W6 iter() at 1e5 entries, 64 changed per epoch, median (us)"]["measured"] is None
    )  # quick sizes stop at 1e3
    assert records["W1 defaults: stall p99 (ms)"]["measured"] is not None
    assert records["W8 row function rows_per_job=2048: client CPU per entry (us)"]["measured"] is not None
    assert records["W9 state_dict() at 1e7 int64 UIDs (s)"]["measured"] is None  # quick sizes: 1e5 UIDs


def test_unknown_workload_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--only", "W99"])
    assert info.value.code == 2 and "unknown workloads ['W99']" in capsys.readouterr().err
