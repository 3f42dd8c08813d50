"""function_fingerprint: follows the code (bytecode, constants, globals, closures, user modules), not the pickle."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import dask_reservoir._worker.cache.keys
from dask_reservoir._worker.cache import origins
from dask_reservoir._worker.cache.fingerprint import function_fingerprint as fp
from dask_reservoir._worker.cache.origins import module_identity


def make(source: str, name: str = "f", *, filename: str = "<a>", blank: int = 0, **namespace: Any) -> Any:
    """The function ``name`` defined by ``source``, compiled as ``filename`` after ``blank`` empty lines."""
    code = compile("\n" * blank + textwrap.dedent(source), filename, "exec")
    exec(code, namespace)
    return namespace[name]


def test_same_function_same_fingerprint() -> None:
    f = make("def f(x):\n    return x + 1\n")
    assert fp(f) == fp(f) == fp(make("def f(x):\n    return x + 1\n"))
    assert len(fp(f)) == 32 and int(fp(f), 16) >= 0


@pytest.mark.parametrize(
    "other",
    [
        "def f(x):\n    return x + 2\n",  # a constant
        "def f(x):\n    return x * 1\n",  # an operator
        "def f(x):\n    return x + 1.0\n",  # a constant's type
        "def f(y):\n    return y + 1\n",  # an argument's name
        "def f(x, z=None):\n    return x + 1\n",  # an argument
        "def f(x):\n    return abs(x) + 1\n",  # a called builtin
    ],
)
def test_a_code_change_changes_the_fingerprint(other: str) -> None:
    assert fp(make("def f(x):\n    return x + 1\n")) != fp(make(other))


def test_moving_a_function_keeps_its_fingerprint() -> None:
    source = """
    import math
    K = 3
    class Helper:
        def scale(self, x):
            return x * K
    def f(x, y=2):
        def inner(z):
            return [math.sqrt(z) for _ in range(y)]
        g = lambda v: v - 1
        try:
            return inner(x) + [g(x)] + [Helper().scale(x)]
        except ValueError:
            return None
    """
    a = make(source, filename="/home/me/a.py")
    b = make(source, filename="/elsewhere/b.py", blank=57)
    assert a.__code__.co_firstlineno != b.__code__.co_firstlineno
    assert fp(a) == fp(b)
    assert fp(a) != fp(make(source.replace("z=None", "").replace("v - 1", "v - 2"), filename="c.py"))


def test_a_called_global_function_counts_by_its_code() -> None:
    source = "def f(x):\n    return h(x)\n"
    one = make("def h(x):\n    return x + 1\n", "h")
    also_one = make("def h(x):\n    return x + 1\n", "h", filename="elsewhere.py", blank=9)
    two = make("def h(x):\n    return x + 2\n", "h")
    assert fp(make(source, h=one)) == fp(make(source, h=also_one))
    assert fp(make(source, h=one)) != fp(make(source, h=two))
    assert fp(make(source, h=one)) != fp(make("def f(x):\n    return k(x)\n", k=one))  # another name
    assert fp(make(source, h=one)) != fp(make(source))  # h undefined


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 2),
        (1, 1.0),
        (1, True),
        (1, "1"),
        (0.0, -0.0),
        ((1, 2), [1, 2]),
        ({1}, frozenset({1})),
        (b"1", "1"),
    ],
)
def test_a_global_value_counts_by_value_and_type(a: Any, b: Any) -> None:
    source = "def f(x):\n    return x + K\n"
    assert fp(make(source, K=a)) == fp(make(source, K=a))
    assert fp(make(source, K=a)) != fp(make(source, K=b))


def test_global_containers_arrays_and_frames_count_by_value() -> None:
    source = "def f(x):\n    return x + len(K)\n"
    for a, b in [
        ({"a": [1, {2, 3}], "b": (None, 1.5)}, {"b": (None, 1.5), "a": [1, {3, 2}]}),
        (np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3)),
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})),
        (np.float32(1.5), np.float32(1.5)),
    ]:
        assert fp(make(source, K=a)) == fp(make(source, K=b))
    for a, b in [
        ({"a": 1}, {"a": 2}),
        (np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)),
        (np.arange(3), np.arange(3).astype(np.int32)),
        (pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [1, 3]})),
        (pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"b": [1, 2]})),
        (pd.Series([1, 2]), pd.Series([1, 2], index=[5, 6])),
        (np.float32(1.5), np.float64(1.5)),
    ]:
        assert fp(make(source, K=a)) != fp(make(source, K=b))


def test_defaults_keyword_defaults_and_closures_count_by_value() -> None:
    assert fp(make("def f(x, y=1):\n    return x + y\n")) != fp(make("def f(x, y=2):\n    return x + y\n"))
    kw = "def f(x, *, y={}):\n    return x + y\n"
    assert fp(make(kw.format(1))) != fp(make(kw.format(2)))

    def outer(c: Any) -> Any:
        def f(x: int) -> Any:
            return x + c

        return f

    assert fp(outer(1)) == fp(outer(1))
    assert fp(outer(1)) != fp(outer(2))
    assert fp(outer([1, 2])) != fp(outer([1, 3]))


def test_a_user_class_counts_by_its_methods_and_the_instance_by_its_state() -> None:
    source = """
    class Scaler:
        factor = 2
        def __init__(self, k):
            self.k = k
        def __call__(self, x):
            return super().__repr__() and x * self.k * self.factor
    """
    # exec without __name__ makes a class of module "builtins"; with one, of a module not imported
    in_script = make(source, "Scaler", __name__="my_script")
    assert fp(in_script(3)) == fp(make(source, "Scaler", __name__="my_script", blank=4)(3))
    assert fp(in_script(3)) != fp(in_script(4))
    assert fp(in_script(3)) != fp(
        make(source.replace("x * self.k", "x - self.k"), "Scaler", __name__="my_script")(3)
    )
    scaler = make(source, "Scaler")
    assert fp(scaler(3)) == fp(make(source, "Scaler", blank=4)(3))  # callable instances
    assert fp(scaler(3)) != fp(scaler(4))
    assert fp(scaler(3)) != fp(make(source.replace("factor = 2", "factor = 3"), "Scaler")(3))
    assert fp(scaler(3)) != fp(make(source.replace("x * self.k", "x + self.k"), "Scaler")(3))
    assert fp(scaler(3).__call__) == fp(scaler(3).__call__)  # bound methods
    assert fp(scaler(3).__call__) != fp(scaler(4).__call__)
    assert fp(scaler(3).__call__) != fp(scaler(3))


def test_partial() -> None:
    f = make("def f(a, b, c=0):\n    return a + b + c\n")
    g = make("def f(a, b, c=0):\n    return a - b - c\n")
    assert fp(functools.partial(f, 1)) == fp(functools.partial(f, 1))
    assert fp(functools.partial(f, 1)) != fp(functools.partial(f, 2))
    assert fp(functools.partial(f, 1)) != fp(functools.partial(g, 1))
    assert fp(functools.partial(f, 1, c=1)) != fp(functools.partial(f, 1, c=2))
    assert fp(functools.partial(f, 1)) != fp(f)


def test_recursion_and_mutual_recursion() -> None:
    fact = "def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1)\n"
    assert fp(make(fact, "fact")) == fp(make(fact, "fact", blank=3))
    assert fp(make(fact, "fact")) != fp(make(fact.replace("n - 1", "n - 2"), "fact"))
    pair = """
    def is_even(n):
        return True if n == 0 else is_odd(n - 1)
    def is_odd(n):
        return False if n == 0 else is_even(n - 1)
    """
    even = make(pair, "is_even")
    assert even(10) is True
    assert fp(even) == fp(make(pair, "is_even", blank=2))
    assert fp(even) != fp(make(pair, "is_odd"))
    assert fp(even) != fp(make(pair.replace("False if", "None if"), "is_even"))  # an edit in is_odd


def test_a_part_reached_twice_keeps_what_its_cycles_point_to() -> None:
    """An encoding is reused only when its cycles stay inside it, else two graphs could collide."""
    p: list[Any] = []
    x = [p]
    p.append(x)
    first = [p, x]  # x refers to p
    p2: list[Any] = []
    p2.append([p2])
    second: list[Any] = [p2]
    second.append([second])  # the same shape, but the last list refers to the root
    source = "def f(x):\n    return x in K\n"
    assert fp(make(source, K=first)) != fp(make(source, K=second))
    assert fp(make(source, K=first)) == fp(make(source, K=[p, x]))


def test_self_referencing_data() -> None:
    def data(head: int) -> list[Any]:
        values: list[Any] = [head]
        values.append(values)
        return values

    source = "def f(x):\n    return x in L\n"
    assert fp(make(source, L=data(1))) == fp(make(source, L=data(1)))
    assert fp(make(source, L=data(1))) != fp(make(source, L=data(2)))


def test_version_is_mixed_in() -> None:
    f = make("def f(x):\n    return x\n")
    assert len({fp(f), fp(f, version=""), fp(f, version="1"), fp(f, version="2")}) == 4
    assert fp(f, version="1") == fp(f, version="1")


def test_an_object_that_is_neither_hashable_nor_picklable_raises_a_clear_type_error() -> None:
    f = make("def f(x):\n    with LOCK:\n        return x\n", LOCK=threading.Lock())
    with pytest.raises(TypeError, match=r"_thread\.lock.*'LOCK'.*cache_version="):
        fp(f)
    assert fp(f, version="1") == fp(
        make("def f(x):\n    with LOCK:\n        return x\n", LOCK=threading.Lock()), version="1"
    )


def test_installed_packages_count_by_name_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    f = make("def f(x):\n    return np.mean(x) + mean(x)\n", np=np, mean=np.mean)
    direct = make("def f(x):\n    return mean(x)\n", mean=np.mean)
    before = fp(f), fp(np.mean), fp(direct)
    assert fp(np.mean) != fp(np.median)
    assert module_identity(np) == ("dist", "numpy", np.__version__)
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda d: "0.0-fake" if d == "numpy" else real_version(d)
    )
    after = fp(f), fp(np.mean), fp(direct)
    assert all(a != b for a, b in zip(before, after, strict=True))
    monkeypatch.undo()
    assert (fp(f), fp(np.mean), fp(direct)) == before


def test_editable_installs_and_files_outside_site_packages_are_user_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert module_identity(dask_reservoir._worker.cache.keys) is None  # installed with pip install -e here
    assert module_identity(os) == ("python", origins.PYTHON)
    assert module_identity(types.ModuleType("made_at_run_time")) is None
    monkeypatch.setattr(origins, "_editable", lambda d: d == "numpy")
    assert module_identity(np) is None


def write_module(folder: Path, name: str, body: str) -> types.ModuleType:
    """(Re)load module ``name`` from ``folder/name.py`` holding ``body``, without a stale bytecode cache."""
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


def test_an_edit_in_an_imported_user_module_changes_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    name = f"mylib_{tmp_path.name.replace('-', '_')}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        mylib = write_module(tmp_path, name, "def f(x):\n    return x + 1\n")
        assert module_identity(mylib) is None
        g = make("def g(x):\n    return mylib.f(x) * 2\n", "g", mylib=mylib)
        g_from = make("def g(x):\n    return f(x) * 2\n", "g", f=mylib.f)  # from mylib import f
        first = fp(g), fp(g_from)

        write_module(tmp_path, name, "\n\ndef f(x):\n    return x + 1\n\ndef unused():\n    return 0\n")
        g_from = make("def g(x):\n    return f(x) * 2\n", "g", f=mylib.f)
        assert (fp(g), fp(g_from)) == first  # moved lines, an attribute g does not use

        write_module(tmp_path, name, "def f(x):\n    return x + 2\n")
        assert g(1) == 6
        g_from = make("def g(x):\n    return f(x) * 2\n", "g", f=mylib.f)
        assert fp(g) != first[0] and fp(g_from) != first[1]
    finally:
        sys.modules.pop(name, None)


SCRIPT = """
import sys
import numpy as np
from dask_reservoir._worker.cache.fingerprint import function_fingerprint

LABELS = {"cat", "dog", "bird", "fish", "frog"}
TABLE = {"alpha": 1, "beta": 2, "gamma": 3}

class Loader:
    scale = 2.0
    def __init__(self, root):
        self.root = root
        self.seen = set(LABELS)
    def load(self, row):
        return np.asarray([row["x"] * self.scale, TABLE.get(row["label"], 0)])

def function_to_run(row):
    return Loader("/data").load(row), row["label"] in LABELS

loader = Loader("/data")
print(function_fingerprint(function_to_run), function_fingerprint(loader.load), function_fingerprint(loader))
"""


def run_script(script: str, seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, timeout=60, text=True, env=env
    )
    return done.stdout.strip()


def test_a_class_defined_in_a_script_has_the_same_fingerprint_in_every_process() -> None:
    first, second = run_script(SCRIPT, "1"), run_script(SCRIPT, "2")
    assert first == second and len(first.split()) == 3
    edited = run_script(SCRIPT.replace("scale = 2.0", "scale = 3.0"), "3").split()
    assert all(a != b for a, b in zip(first.split(), edited, strict=True))


class Scaler:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, row: dict[str, int]) -> dict[str, int]:
        return {"v": row["x"] * self.k}


def test_pickling_an_instance_does_not_change_its_fingerprint() -> None:
    scaler = Scaler(3)
    before = (fp(scaler), fp(scaler.__call__))
    pickle.loads(pickle.dumps(scaler))  # copyreg caches __slotnames__ on the class
    assert "__slotnames__" in Scaler.__dict__
    assert (fp(scaler), fp(scaler.__call__)) == before
