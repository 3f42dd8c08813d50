"""Where code comes from, for :mod:`~dask_reservoir._worker.cache.fingerprint`: installed or user code.

Installed code (site-packages, the standard library) is identified by its distribution's
name and version, or by Python's version; user code (a script, a folder on ``sys.path``, the
sources of an editable install) has no such identity and is hashed by value.
"""

from __future__ import annotations

import dis
import functools
import importlib.metadata
import json
import os
import site
import sys
import sysconfig
import types
from typing import Any

__all__ = ["PYTHON", "Origins", "code_names", "module_identity"]

PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
_GLOBAL_OPS = frozenset(
    {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"}
)


@functools.cache
def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(site-packages folders, standard library folders): real paths ending with a separator."""
    paths = sysconfig.get_paths()
    sites = {paths["purelib"], paths["platlib"], *site.getsitepackages(), site.getusersitepackages()}
    std = {paths["stdlib"], paths["platstdlib"]}
    return tuple(os.path.realpath(p) + os.sep for p in sites), tuple(
        os.path.realpath(p) + os.sep for p in std
    )


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that install it."""
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _editable(distribution: str) -> bool:
    """Whether ``distribution`` is installed with ``pip install -e`` (its code is then user code)."""
    try:
        text = importlib.metadata.distribution(distribution).read_text("direct_url.json")
        return bool(json.loads(text or "{}").get("dir_info", {}).get("editable", False))
    except (importlib.metadata.PackageNotFoundError, ValueError, AttributeError):
        return False


def module_identity(module: types.ModuleType) -> tuple[str, ...] | None:
    """What identifies an installed module's code, or None for user code (to hash by value).

    Under site-packages: ``("dist", name, version)`` of its distribution (None when that
    is an editable install), or ``("site", top-level name, __version__)`` without one; the
    standard library and builtin modules: ``("python", "3.X")``.  Anywhere else: None.

    Examples
    --------
    >>> import json, numpy
    >>> module_identity(json) == ("python", PYTHON), module_identity(numpy)[:2]
    (True, ('dist', 'numpy'))
    """
    name = module.__name__
    top = name.partition(".")[0]
    file = getattr(module, "__file__", None)
    paths = [file] if isinstance(file, str) else list(getattr(module, "__path__", []))
    real = [os.path.realpath(p) for p in paths if isinstance(p, str)]
    sites, std = _library_dirs()
    if real and all(p.startswith(sites) for p in real):  # first: site-packages may be in stdlib
        distributions = sorted(set(_distributions().get(top, [])))
        if any(_editable(d) for d in distributions):
            return None
        for distribution in distributions:
            try:
                return ("dist", distribution, importlib.metadata.version(distribution))
            except importlib.metadata.PackageNotFoundError:
                continue
        return ("site", top, str(getattr(sys.modules.get(top), "__version__", "")))
    if real and all(p.startswith(std) for p in real):
        return ("python", PYTHON)
    if not real and (name in sys.builtin_module_names or top in sys.stdlib_module_names):
        return ("python", PYTHON)
    return None


@functools.lru_cache(maxsize=4096)
def code_names(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """(the names in ``co_names`` of ``code`` and its nested code, those it uses as globals).

    Examples
    --------
    >>> names, global_names = code_names((lambda x: np.mean(x.values)).__code__)
    >>> sorted(names), sorted(global_names)
    (['mean', 'np', 'values'], ['np'])
    """
    names = set(code.co_names)
    global_names = {str(i.argval) for i in dis.get_instructions(code) if i.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner, inner_globals = code_names(const)
            names |= inner
            global_names |= inner_globals
    return frozenset(names), frozenset(global_names)


class Origins:
    """:func:`module_identity` by module name, cached; installed functions and classes by name."""

    def __init__(self) -> None:
        self.identities: dict[str, tuple[str, ...] | None] = {}

    def of(self, module_name: Any) -> tuple[str, ...] | None:
        """The identity of an installed module by name; None for user code or a module not imported."""
        if not isinstance(module_name, str):
            return None
        if module_name not in self.identities:
            module = sys.modules.get(module_name)
            self.identities[module_name] = None if module is None else module_identity(module)
        return self.identities[module_name]

    def name(self, obj: Any) -> tuple[str, ...] | None:
        """``(*identity, module, name)`` of an installed package's function or class found by name there.

        Examples
        --------
        >>> import numpy as np
        >>> Origins().name(np.mean)[-2:], Origins().name(len) == ("python", PYTHON, "builtins", "len")
        (('numpy', 'mean'), True)
        >>> Origins().name(lambda: 0) is None
        True
        """
        module_name = getattr(obj, "__module__", None)
        identity = self.of(module_name)
        if identity is None:
            return None
        method = isinstance(obj, (types.MethodType, types.BuiltinMethodType))  # np.random.rand, say
        for path in dict.fromkeys((getattr(obj, "__qualname__", None), getattr(obj, "__name__", None))):
            target: Any = sys.modules[str(module_name)]
            try:
                for part in str(path).split("."):
                    target = getattr(target, part)
                if path is not None and (target is obj or (method and target == obj)):
                    return (*identity, str(module_name), str(path))
            except Exception:  # not found, or a module's __getattr__ that fails
                continue
        return None
