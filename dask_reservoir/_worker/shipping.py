"""How ``function_to_run`` travels to the workers: pickled once, by value when it is user code.

:func:`dumps_function` pickles the function (its user code by value, see
:func:`function_package`); :func:`payload_of` is the task that holds the bytes
on the cluster; :func:`load_function` unpickles them on a worker (cached per payload),
raising :class:`FunctionLoadError` when the worker cannot import what a
reference names, so that the runner sends the function by value instead.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["PICKLE_LOCK", "FunctionLoadError", "dumps_function", "function_package", "payload_of"]

PICKLE_LOCK = threading.Lock()


class FunctionLoadError(ImportError):
    """The worker could not unpickle ``function_to_run`` (its module is not importable there).

    The runner then sends the function by value and submits the rows again.
    """


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        os.path.realpath(p) + os.sep
        for p in {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    )


def _is_library(module: object) -> bool:
    """Whether ``module`` comes from the standard library or site-packages (importable on a cluster)."""
    file = getattr(module, "__file__", None)
    if not file:
        return True  # builtin or namespace: leave it to pickle by reference
    return os.path.realpath(file).startswith(_library_dirs())


def function_package(function: Callable[..., Any]) -> str | None:
    """Top-level package of ``function``'s module when it is user code, else None.

    None for ``__main__`` (cloudpickle always sends it by value), builtins, the
    standard library and site-packages.

    Examples
    --------
    >>> function_package(len) is None
    True
    """
    module_name = getattr(function, "__module__", None) or "__main__"
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    if module is None or top == "__main__" or _is_library(sys.modules.get(module_name, module)):
        return None
    return top


def dumps_function(function: Callable[..., Any], *, by_value: bool = True) -> bytes:
    """Pickle ``function`` so that a cluster which cannot import its module can run it.

    With ``by_value``, functions of user code (see :func:`function_package`) are
    pickled by value with cloudpickle, together with what they use from their
    own top-level package (module globals they use are copied); functions of
    installed libraries stay references.  When the by-value pickle fails (a
    module-level lock, say), a reference is sent instead; a function that cannot
    be pickled at all raises ``TypeError`` naming it.

    Examples
    --------
    >>> import cloudpickle
    >>> cloudpickle.loads(dumps_function(len))("abc")
    3
    """
    top = function_package(function)
    if top is None or not by_value:
        return _dumps(function)
    module = sys.modules[top]
    with PICKLE_LOCK:
        registered = top in cloudpickle.list_registry_pickle_by_value()
        try:
            if not registered:
                cloudpickle.register_pickle_by_value(module)
            return cloudpickle.dumps(function)
        except Exception:
            pass
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)
    return _dumps(function)


def dumps_for_process(obj: Any, function: Callable[..., Any]) -> bytes:
    """Pickle ``obj`` with cloudpickle for another Python started here (the loader process).

    ``function``'s package travels by value when a new interpreter could not import it
    by name (a module loaded from a file path, not on ``sys.path``).
    """
    top = function_package(function)
    module = sys.modules.get(top) if top else None
    if module is None or _findable(top or ""):
        return cloudpickle.dumps(obj, protocol=5)
    with PICKLE_LOCK:
        registered = top in cloudpickle.list_registry_pickle_by_value()
        try:
            if not registered:
                cloudpickle.register_pickle_by_value(module)
            return cloudpickle.dumps(obj, protocol=5)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def _findable(name: str) -> bool:
    """Whether a new interpreter could import ``name`` (asking the finders, not ``sys.modules``)."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        try:
            if find_spec is not None and find_spec(name, None) is not None:
                return True
        except Exception:  # a third-party finder that fails: ask the next one
            continue
    return False


def _dumps(function: Callable[..., Any]) -> bytes:
    try:
        return cloudpickle.dumps(function)
    except Exception as exc:
        raise TypeError(
            f"function_to_run must be picklable with cloudpickle to run on dask workers, but "
            f"{function!r} is not: {type(exc).__name__}: {exc} (a closure over a lock, a file or a "
            "connection, say: open those inside the function instead)"
        ) from exc


def payload_of(payload: bytes) -> bytes:
    """The task that holds the pickled function on the cluster (the identity)."""
    return payload


@functools.lru_cache(maxsize=32)
def load_function(payload: bytes) -> Callable[[dict[str, Any]], Any]:
    try:
        function: Callable[[dict[str, Any]], Any] = cloudpickle.loads(payload)
    except (ImportError, AttributeError) as exc:
        raise FunctionLoadError(
            f"this worker cannot load function_to_run ({type(exc).__name__}: {exc}); it must travel by value"
        ) from None
    return function
