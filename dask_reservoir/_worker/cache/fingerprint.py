"""Fingerprints of ``function_to_run`` for the persistent tier: they follow the code, not the pickle.

Bytecode, constants and names (not the file or lines), defaults and closures by value, the globals
used, recursively (installed packages by name and version: :mod:`.origins`): a cached result is found
by another process running the same code, and missed once the code changes.  Cloudpickle bytes
change in every process for a script's class, and never for an edited installed package.
"""

from __future__ import annotations

import builtins
import copyreg
import functools
import hashlib
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir._worker.cache.keys import pack
from dask_reservoir._worker.cache.origins import Origins, code_names, module_identity

__all__ = ["function_fingerprint"]

# Class attributes that say where a class is, or are derived or caches, not what it does.
_CLASS_SKIP = frozenset(
    {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__firstlineno__"}
    | {"__static_attributes__", "_abc_impl", "__slotnames__"}  # __slotnames__: set by the first pickle
)
_CONTAINERS = (tuple, list, set, frozenset, dict, types.MappingProxyType)
_DESCRIPTORS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)
_ACCESSORS = (staticmethod, classmethod, property, functools.cached_property)
_NO_NAMES: frozenset[str] = frozenset()
_OWN_NAMES = frozenset({"function", "klass", "code", "pandas", "descriptor"})
_Build = Callable[[Any, frozenset[str]], list[bytes]]


def function_fingerprint(function: Callable[..., Any], *, version: str | None = None) -> str:
    """A hex digest of what ``function`` does, stable across processes and line moves.

    Parameters
    ----------
    function : callable
        A function, lambda, nested function, ``functools.partial``, bound method or
        callable instance.
    version : str, optional
        Mixed into the digest (``cache_version=`` of the reservoir): change it to force a
        new fingerprint.  With a version, objects that can be neither hashed by value nor
        pickled (a lock, an open file) count by their type only instead of raising.

    Returns
    -------
    str
        32 hexadecimal characters (a truncated SHA-256).

    Raises
    ------
    TypeError
        When ``function`` reaches an object that can be neither hashed by value nor pickled
        and ``version`` is None: the message names its type and where it was found.

    Examples
    --------
    >>> a, b, c = (lambda x: x + 1), (lambda x: x + 2), (lambda x: x + 1)
    >>> function_fingerprint(a) == function_fingerprint(b), function_fingerprint(a) == function_fingerprint(c)
    (False, True)
    >>> function_fingerprint(a) == function_fingerprint(a, version="2")
    False
    >>> len(function_fingerprint(len))
    32
    """
    encoder = _Encoder(lenient=version is not None)
    try:
        body = encoder.encode(function)
    except RecursionError:
        raise TypeError(
            f"cannot fingerprint function_to_run {function!r}: it reaches data nested too deeply; "
            "pass cache_version= to name the function's version yourself"
        ) from None
    h = hashlib.sha256(b"dask_reservoir.function_fingerprint/1\0")
    h.update(body)
    h.update(pack("version") if version is None else pack("version", _text(version)))
    return h.hexdigest()[:32]


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _dtype(dtype: np.dtype[Any]) -> bytes:
    return _text(dtype.str + (repr(dtype.descr) if dtype.names else ""))


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: pack("none"),
    bool: lambda v: pack("bool", b"1" if v else b"0"),
    int: lambda v: pack("int", str(v).encode()),
    float: lambda v: pack("float", v.hex().encode()),
    complex: lambda v: pack("complex", v.real.hex().encode(), v.imag.hex().encode()),
    str: lambda v: pack("str", _text(v)),
    bytes: lambda v: pack("bytes", v),
    bytearray: lambda v: pack("bytearray", bytes(v)),
    type(...): lambda v: pack("ellipsis"),
    type(NotImplemented): lambda v: pack("notimplemented"),
}


class _Encoder:
    """Encodes objects by value: scalars as themselves, the rest as digests of their parts.

    ``active`` maps the objects being encoded to their depth: a cycle is encoded as the
    distance back to the object it reaches.  ``done`` keeps the encodings that reached no
    object above their own (they do not depend on where they are found).  ``names`` are the
    names the function being encoded uses: they pick the attributes of a user module.
    """

    def __init__(self, *, lenient: bool) -> None:
        self.lenient = lenient
        self.active: dict[tuple[int, frozenset[str]], int] = {}
        self.done: dict[tuple[int, frozenset[str]], tuple[Any, bytes]] = {}
        self.depth = self.low = 0
        self.origins = Origins()
        self.trail: list[str] = []  # where the object being encoded was found, for errors
        self.first: list[tuple[Any, _Build]] = [
            (np.ndarray, self.array),
            ((pd.DataFrame, pd.Series, pd.Index), self.pandas),
            (types.CodeType, self.code),
            (types.FunctionType, self.function),
            (type, self.klass),
        ]
        self.then: list[tuple[Any, _Build]] = [
            (types.MethodType, self.method),
            (functools.partial, self.partial),
            (_ACCESSORS, self.accessor),
            (_DESCRIPTORS, self.descriptor),
            ((types.BuiltinFunctionType, types.MethodWrapperType), self.builtin),
        ]

    def named(self, obj: Any) -> bytes | None:
        name = self.origins.name(obj)
        return None if name is None else pack("named", *map(_text, name))

    def node(self, obj: Any, names: frozenset[str], tag: str, build: Callable[[], list[bytes]]) -> bytes:
        key = (id(obj), names)
        if key in self.active:  # a cycle: the distance back to the object
            target = self.active[key]
            self.low = min(self.low, target)
            return pack("cycle", str(self.depth - target).encode())
        if key in self.done:
            return self.done[key][1]
        self.depth += 1
        depth, outer_low = self.depth, self.low
        self.active[key] = self.low = depth
        try:
            result = pack(tag, hashlib.sha256(pack(tag, *build())).digest())
            if self.low >= depth:
                self.done[key] = (obj, result)
        finally:
            del self.active[key]
            self.depth -= 1
            self.low = min(outer_low, self.low)
        return result

    def encode(self, obj: Any, names: frozenset[str] = _NO_NAMES) -> bytes:
        scalar = _SCALARS.get(type(obj))
        if scalar is not None:
            return scalar(obj)
        if isinstance(obj, np.generic):
            return pack("numpy", _dtype(obj.dtype), np.asarray(obj).tobytes())
        if isinstance(obj, types.ModuleType):
            return self.module(obj, names)
        build = self.builder(obj)
        if isinstance(build, bytes):
            return build
        if build.__name__ in _OWN_NAMES:  # a function uses its own names: one encoding, whoever refers to it
            names = _NO_NAMES
        return self.node(obj, names, build.__name__, lambda: build(obj, names))

    def builder(self, obj: Any) -> _Build | bytes:
        """How to encode ``obj``, or its encoding when it is an installed package's function or class."""
        if type(obj) in _CONTAINERS:
            return self.container
        for kinds, build in self.first:
            if isinstance(obj, kinds):
                return build
        named = self.named(obj)
        if named is not None:
            return named
        for kinds, build in self.then:
            if isinstance(obj, kinds):
                return build
        return self.instance

    def container(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        head = [_text(type(obj).__name__)]
        if isinstance(obj, (tuple, list)):
            return [*head, *(self.encode(item, names) for item in obj)]
        if isinstance(obj, (set, frozenset)):
            return [*head, *sorted(self.encode(item, names) for item in obj)]
        pairs = sorted((self.encode(k, names), self.encode(v, names)) for k, v in obj.items())
        return [*head, *(part for pair in pairs for part in pair)]

    def array(self, array: np.ndarray[Any, Any], names: frozenset[str]) -> list[bytes]:
        head = [_text(_type_name(array)), _dtype(array.dtype), _text(repr(array.shape))]
        if array.dtype.hasobject or array.dtype.kind == "T":  # objects, StringDType: by value
            return [*head, self.encode(array.tolist(), names)]
        return [*head, np.ascontiguousarray(array).tobytes()]

    def pandas(self, obj: pd.DataFrame | pd.Series | pd.Index, names: frozenset[str]) -> list[bytes]:
        head = [_text(_type_name(obj))]
        if isinstance(obj, pd.DataFrame):
            columns = [self.encode(obj.iloc[:, i]) for i in range(obj.shape[1])]
            return [*head, self.encode(obj.columns), self.encode(obj.index), *columns]
        head += [_text(str(obj.dtype)), self.encode(obj.to_numpy())]
        if isinstance(obj.dtype, pd.CategoricalDtype):
            head += [self.encode(obj.dtype.categories), self.encode(obj.dtype.ordered)]
        if isinstance(obj, pd.Series):
            return [*head, self.encode(obj.name), self.encode(obj.index)]
        return [*head, self.encode(list(obj.names))]

    def code(self, code: types.CodeType, names: frozenset[str]) -> list[bytes]:
        """Bytecode, constants, names and counts; not the file, the line numbers or the qualified name."""
        counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_nlocals)
        identifiers = (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)
        return [
            code.co_code,
            code.co_exceptiontable,
            self.encode(code.co_consts),
            _text(code.co_name),
            *(_text("\0".join(n)) for n in identifiers),
            _text(repr((*counts, code.co_flags))),
        ]

    def function(self, function: types.FunctionType, _: frozenset[str]) -> list[bytes]:
        identity = self.origins.of(function.__module__)
        if identity is not None:
            named = self.named(function)
            if named is not None:
                return [named]
            # made at run time inside an installed package (a decorator's wrapper): what it holds
            head = [*map(_text, identity), _text(function.__module__), _text(function.__qualname__)]
            return [*head, self.encode(function.__defaults__), *self.closure(function, _NO_NAMES)]
        code = function.__code__
        names, global_names = code_names(code)
        parts = [self.encode(code), self.encode(function.__defaults__, names)]
        parts += [self.encode(function.__kwdefaults__, names), *self.closure(function, names)]
        namespace = function.__globals__
        builtin_names = getattr(function, "__builtins__", vars(builtins))
        if isinstance(builtin_names, types.ModuleType):
            builtin_names = vars(builtin_names)
        for name in sorted(global_names):
            self.trail.append(f"global {name!r} of {function.__qualname__}")
            if name in namespace:
                parts += [_text(name), self.encode(namespace[name], names)]
            elif name in builtin_names:
                parts += [_text(name), pack("builtin"), self.encode(builtin_names[name])]
            else:
                parts += [_text(name), pack("unbound")]
            self.trail.pop()
        if function.__dict__:  # attributes: __wrapped__ of a decorated function, say
            parts.append(self.encode(dict(function.__dict__), names))
        return parts

    def closure(self, function: types.FunctionType, names: frozenset[str]) -> list[bytes]:
        parts = []
        for variable, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=False):
            self.trail.append(f"closure variable {variable!r} of {function.__qualname__}")
            try:
                parts.append(self.encode(cell.cell_contents, names))
            except ValueError:  # an empty cell
                parts.append(pack("empty"))
            self.trail.pop()
        return parts

    def klass(self, cls: type, _: frozenset[str]) -> list[bytes]:
        """An installed class by name; another (a class made by exec says "builtins") by value."""
        named = self.named(cls)
        if named is not None:
            return [named]
        parts = [_text(cls.__name__), self.encode(cls.__bases__), self.encode(type(cls))]
        for name in sorted(set(cls.__dict__) - _CLASS_SKIP):
            self.trail.append(f"attribute {name!r} of class {cls.__qualname__}")
            parts += [_text(name), self.encode(cls.__dict__[name])]
            self.trail.pop()
        return parts

    def partial(self, obj: functools.partial[Any], names: frozenset[str]) -> list[bytes]:
        parts = [self.encode(obj.func, names), self.encode(obj.args, names), self.encode(obj.keywords, names)]
        return [*parts, self.encode(dict(obj.__dict__), names)]

    def method(self, obj: types.MethodType, names: frozenset[str]) -> list[bytes]:
        return [self.encode(obj.__func__, names), self.encode(obj.__self__, names)]

    def descriptor(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        return [self.encode(obj.__objclass__), _text(obj.__name__)]

    def accessor(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        """A staticmethod, classmethod, property or cached_property: the functions it holds."""
        functions: list[Any]
        if isinstance(obj, property):
            functions = [obj.fget, obj.fset, obj.fdel]
        elif isinstance(obj, functools.cached_property):
            functions = [obj.func, obj.attrname]
        else:
            functions = [obj.__func__]
        return [_text(type(obj).__name__), *(self.encode(f, names) for f in functions)]

    def builtin(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        owner = getattr(obj, "__self__", None)
        owner_part = (
            _text(owner.__name__) if isinstance(owner, types.ModuleType) else self.encode(owner, names)
        )
        return [_text(obj.__qualname__), owner_part]

    def module(self, module: types.ModuleType, names: frozenset[str]) -> bytes:
        """An installed module by its identity; a user module by its attributes that ``names`` names."""
        if sys.modules.get(module.__name__) is module:
            identity = self.origins.of(module.__name__)
        else:
            identity = module_identity(module)
        if identity is not None:
            return pack("module", _text(module.__name__), *map(_text, identity))
        namespace = vars(module)

        def build() -> list[bytes]:
            parts = [_text(module.__name__)]
            for name in sorted(names & namespace.keys()):
                self.trail.append(f"attribute {name!r} of module {module.__name__}")
                parts += [_text(name), self.encode(namespace[name], names)]
                self.trail.pop()
            return parts

        return self.node(module, names, "user module", build)

    def instance(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        """A user class's instance: its class and state; an installed class's: its ``__reduce_ex__``."""
        kind = type(obj)
        try:
            wrapped = object.__getattribute__(obj, "__dict__").get("__wrapped__")
        except AttributeError:
            wrapped = None
        if wrapped is not None:  # functools.lru_cache and other wrappers: what they wrap
            return [self.encode(kind), self.encode(wrapped, names)]
        try:
            if self.origins.of(kind.__module__) is None:
                return self.user_instance(obj, names)
            reducer = copyreg.dispatch_table.get(kind)  # as pickle does (re.Pattern, say)
            reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(5)
        except Exception as exc:
            return self.opaque(obj, exc)
        if isinstance(reduced, str):  # a module-level singleton, pickled by name
            return [self.encode(kind), _text(reduced)]
        call, args, state, items, pairs, setter = (*reduced, None, None, None, None)[:6]
        parts = [self.encode(call), self.encode(args, names), self.encode(state, names)]
        parts += [self.encode(None if items is None else list(items), names), self.encode(setter, names)]
        return [*parts, self.encode(None if pairs is None else dict(pairs), names)]

    def user_instance(self, obj: Any, names: frozenset[str]) -> list[bytes]:
        parts = [self.encode(type(obj)), self.encode(obj.__getstate__(), names)]
        if isinstance(obj, (dict, set, frozenset, list, tuple)):  # a dict subclass: its items too
            convert = (
                dict if isinstance(obj, dict) else frozenset if isinstance(obj, (set, frozenset)) else list
            )
            parts.append(self.encode(convert(obj), names))
        for base in (int, float, complex, str, bytes):  # an IntEnum, a str subclass: its value too
            if isinstance(obj, base):
                parts.append(pack(base.__name__, _text(base.__repr__(obj))))
        return parts

    def opaque(self, obj: Any, exc: Exception) -> list[bytes]:
        if self.lenient:
            return [_text(_type_name(obj))]
        where = f" (at {' -> '.join(self.trail[-3:])})" if self.trail else ""
        raise TypeError(
            f"cannot fingerprint function_to_run: it uses an object of type {_type_name(obj)}{where} "
            f"that can be neither hashed by value nor pickled ({type(exc).__name__}: {exc}); pass "
            "cache_version= to name the function's version yourself, or create the object inside the function"
        ) from None
