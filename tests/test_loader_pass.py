"""The loader pass's record and selection (tests/loader_pass.py), without running a suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.loader_pass import (
    EXEMPT,
    RECORD,
    LoaderPass,
    may_build_reservoirs,
    sources_digest,
    started_by_library,
)


def make_root(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "dask_reservoir").mkdir()
    (tmp_path / "dask_reservoir" / "m.py").write_text("X = 1\n")
    return tmp_path


def plugin(root: Path, *, selecting: bool) -> LoaderPass:
    config = SimpleNamespace(rootpath=root, getoption=lambda name: selecting)
    return LoaderPass(config)  # type: ignore[arg-type]


class Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


class Hooks:
    def __init__(self) -> None:
        self.deselected: list[str] = []

    def pytest_deselected(self, items: list[Item]) -> None:
        self.deselected += [i.nodeid for i in items]


def record_run(root: Path, ran: dict[str, bool]) -> None:
    """A recording session in which the tests ``ran`` ran (True: built such a reservoir)."""
    p = plugin(root, selecting=False)
    assert p.recording
    p.ran = set(ran)
    p.recorded = {t for t, built in ran.items() if built}
    p.pytest_sessionfinish(None)  # type: ignore[arg-type]


def select(root: Path, nodeids: list[str]) -> tuple[list[str], list[str], list[str]]:
    p = plugin(root, selecting=True)
    hooks = Hooks()
    items: list[Any] = [Item(n) for n in nodeids]
    p.pytest_collection_modifyitems(SimpleNamespace(hook=hooks), items)  # type: ignore[arg-type]
    return [i.nodeid for i in items], hooks.deselected, p.pytest_report_collectionfinish()


def test_the_second_pass_runs_what_the_first_recorded(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    record_run(root, {"t::a": True, "t::b": False, "t::c": True})
    kept, deselected, summary = select(root, ["t::a", "t::b", "t::c"])
    assert kept == ["t::a", "t::c"] and deselected == ["t::b"]
    assert summary[0].startswith("loader pass: 2 tests recorded as building a reservoir")
    assert "does not know" not in summary[0]


def test_tests_the_record_does_not_know_are_run(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    record_run(root, {"t::a": True, "t::b": False})
    kept, deselected, summary = select(root, ["t::a", "t::b", "t::new"])
    assert kept == ["t::a", "t::new"] and deselected == ["t::b"]
    assert "and 1 tests the record does not know (run to be safe)" in summary[0]


def test_without_a_record_every_test_runs(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    kept, deselected, summary = select(root, ["t::a", "t::b"])
    assert kept == ["t::a", "t::b"] and deselected == []
    assert f"no record in {RECORD}" in summary[0]


@pytest.mark.parametrize("garbage", ["", "{", "[]", json.dumps({"format": 0})])
def test_an_unreadable_record_is_no_record(tmp_path: Path, garbage: str) -> None:
    root = make_root(tmp_path)
    (root / RECORD).parent.mkdir(parents=True)
    (root / RECORD).write_text(garbage)
    kept, _, summary = select(root, ["t::a", "t::b"])
    assert kept == ["t::a", "t::b"] and "no record" in summary[0]


@pytest.mark.parametrize("changed", ["tests/test_a.py", "dask_reservoir/m.py"])
def test_a_record_of_other_sources_is_not_trusted(tmp_path: Path, changed: str) -> None:
    root = make_root(tmp_path)
    record_run(root, {"t::a": True, "t::b": False})
    (root / changed).write_text("# changed\n")
    kept, deselected, summary = select(root, ["t::a", "t::b"])
    assert kept == ["t::a", "t::b"] and deselected == []
    assert "is of other sources" in summary[0]


def test_a_partial_run_is_merged_into_the_record_of_the_same_sources(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    record_run(root, {"t::a": True, "t::b": False, "t::c": True})
    record_run(root, {"t::b": True, "t::c": False})  # only these ran again
    record = json.loads((root / RECORD).read_text())
    assert record["ran"] == ["t::a", "t::b", "t::c"] and record["selected"] == ["t::a", "t::b"]
    (root / "tests" / "test_a.py").write_text("# changed\n")
    record_run(root, {"t::c": True})  # other sources: the old record is dropped
    record = json.loads((root / RECORD).read_text())
    assert record["ran"] == ["t::c"] and record["selected"] == ["t::c"]


def test_a_session_that_ran_nothing_writes_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    record_run(root, {})
    assert not (root / RECORD).exists()


def test_the_digest_follows_paths_and_contents(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    first = sources_digest(root)
    assert sources_digest(root) == first
    (root / "tests" / "__pycache__").mkdir()
    (root / "tests" / "__pycache__" / "x.py").write_text("ignored")
    (root / "README.md").write_text("not a source of the selection")
    assert sources_digest(root) == first
    (root / "tests" / "test_a.py").rename(root / "tests" / "test_b.py")
    assert sources_digest(root) != first


def test_recording_is_off_in_the_loader_pass_or_when_the_config_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_root(tmp_path)
    assert not plugin(root, selecting=True).recording
    import dask

    with dask.config.set({"dask_reservoir.loader": "auto"}):
        assert not plugin(root, selecting=False).recording


@pytest.mark.parametrize(
    ("argv", "builds"),
    [
        ([sys.executable, "-m", "dask_reservoir", "demo"], True),
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "k.json"], True),
        ([sys.executable, "-m", "dask", "scheduler"], False),
        ([sys.executable, "-m", "distributed.cli.dask_worker"], False),
        ([sys.executable, "-u", "-c", "import dask_reservoir"], True),
        ([sys.executable, "-c", "print(1)"], False),
        ([sys.executable, "-c"], False),
        ([sys.executable], False),
        (["git", "status"], False),
        (["/usr/bin/python3.11", "-m", "dask_reservoir"], True),
    ],
)
def test_which_children_may_build_reservoirs(argv: list[str], builds: bool) -> None:
    assert may_build_reservoirs(argv) is builds


def test_a_script_builds_reservoirs_when_it_names_the_package(tmp_path: Path) -> None:
    uses, plain = tmp_path / "uses.py", tmp_path / "plain.py"
    uses.write_text("from dask_reservoir import AsyncReservoir\n")
    plain.write_text("print('hello')\n")
    assert may_build_reservoirs([sys.executable, str(uses), "arg"])
    assert not may_build_reservoirs([sys.executable, str(plain)])
    assert may_build_reservoirs([sys.executable, str(tmp_path / "missing.py")])  # cannot tell: counted


def test_a_child_the_library_starts_is_not_the_tests() -> None:
    assert not started_by_library(sys._getframe())
    library = {"__name__": "dask_reservoir._runtime.loader.parent"}
    frame: Any = SimpleNamespace(f_globals=library, f_back=None)
    assert started_by_library(frame)
    via_run: Any = SimpleNamespace(f_globals={"__name__": "subprocess"}, f_back=frame)
    assert started_by_library(via_run)


def test_recording_sees_the_python_children_of_the_running_test(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    session = pytestconfig.pluginmanager.get_plugin("dask-reservoir-loader-pass")
    running, session.current = session.current, None  # this session does not record these children
    before = subprocess.Popen.__init__
    p = plugin(make_root(tmp_path), selecting=False)
    p._wrap_popen()
    try:
        assert subprocess.Popen.__init__ is not before
        p.current = "t::child"
        subprocess.run([sys.executable, "-c", "import sys; 'dask_reservoir'"], check=True)
        p.current = "t::plain"
        subprocess.run([sys.executable, "-c", "print()"], check=True, capture_output=True)
        p.current = None
        subprocess.run([sys.executable, "-c", "'dask_reservoir'"], check=True)  # between tests
    finally:
        p.pytest_sessionfinish(None)  # type: ignore[arg-type]  # undoes the wrapping
        session.current = running
    assert p.recorded == {"t::child"}
    assert subprocess.Popen.__init__ is before


def test_exempt_modules_are_left_out_with_their_reason(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    exempt = next(iter(EXEMPT))
    record_run(root, {f"{exempt}::t": True, "t::a": True})
    kept, deselected, summary = select(root, [f"{exempt}::t", f"{exempt}::new", "t::a"])
    assert kept == ["t::a"] and deselected == [f"{exempt}::t", f"{exempt}::new"]
    assert f"loader pass: not {exempt}: {EXEMPT[exempt]}" in summary
    (tmp_path / "clean").mkdir()
    kept, _, _ = select(make_root(tmp_path / "clean"), [f"{exempt}::t", "t::a"])  # no record
    assert kept == ["t::a"]
