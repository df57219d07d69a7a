"""numba's on-disk cache, made to notice code that changed in other files.

numba keys a ``cache=True`` function's cached machine code on the function's own
bytecode and on its own file's modification time and size. The code it calls in
*other* files (another module's jitted function or intrinsic, inlined into it) and
the constants it imports from other modules (frozen into the machine code) are not
part of that key. After an upgrade or a ``git checkout`` that changes only those
other files, a process would load the old machine code and compute with the old
callee or the old constant, with no error: a silent wrong result.

:func:`guard`, called at the end of every tying module that defines cached numba
functions, adds a digest of what those functions can depend on to the stamp numba
keeps in each function's cache index. numba itself then finds an index with another
digest stale and compiles afresh (and saves over it); nothing is deleted. The digest
covers the module's own source and, for each name it imports from tying:

- a module, or a numba function or intrinsic: that module's digest, recursively;
- a function or class of the package (a code generator an intrinsic runs at compile
  time): the digest of the module defining it;
- anything else (a constant such as a threshold, a dict of options): its value.

When numba's internals no longer look as expected, the module's functions are not
cached at all (compiled in every process: slow, never stale), and a warning says so.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import pathlib
import sys
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

_DIGESTS: dict[str, str] = {}  # module name -> digest, for this process
_MARK = "tying-sources"  # the stamp numba keeps: (its own stamp, (_MARK, digest))


def _value_bytes(value) -> bytes:
    """A stable rendering of an imported constant's value."""
    if isinstance(value, dict):  # e.g. numba's options: their values change the code
        return b"{" + b",".join(_value_bytes(kv) for kv in sorted(value.items(), key=repr)) + b"}"
    if isinstance(value, np.ndarray):
        return f"ndarray:{value.dtype.str}:{value.shape}:".encode() + value.tobytes()
    if isinstance(value, bool | int | float | complex | str | bytes | type(None) | np.generic):
        return f"{type(value).__name__}:{value!r}".encode()
    if isinstance(value, tuple | list | frozenset):
        return b"(" + b",".join(_value_bytes(v) for v in value) + b")"
    # functions and classes: numba cannot call plain Python ones in nopython code
    return f"{type(value).__name__}:{getattr(value, '__qualname__', '?')}".encode()


def _is_numba_object(value) -> bool:
    return type(value).__module__.split(".")[0] == "numba"


def digest(module: ModuleType) -> str:
    """The digest of what ``module``'s cached numba functions can depend on.

    Args:
        module: an imported module of a package (its source file must be readable).

    Returns:
        A hex SHA-256 of the module's source and of what it imports from its own
        top-level package (see the module docstring).

    Raises:
        OSError: when a source file cannot be read.

    Example:
        >>> import tying.hmm._numba_scaled as m
        >>> len(digest(m))
        64
    """
    name = module.__name__
    if name in _DIGESTS:
        return _DIGESTS[name]
    root = name.split(".")[0]
    source = pathlib.Path(module.__file__).read_bytes()
    h = hashlib.sha256(name.encode() + b"\0" + source)
    _DIGESTS[name] = "(in progress)"  # an import cycle reads this, not a recursion
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root and alias.name in sys.modules:
                    h.update(digest(sys.modules[alias.name]).encode())
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != root:
                continue
            dep = sys.modules.get(node.module)
            if dep is None:  # imported under a condition that did not hold: its source
                spec = importlib.util.find_spec(node.module)
                origin = getattr(spec, "origin", None) or ""
                h.update(pathlib.Path(origin).read_bytes() if origin.endswith(".py") else b"?")
                continue
            for alias in node.names:
                value = getattr(dep, alias.name, None)
                h.update(f"\0{node.module}.{alias.name}=".encode())
                home = sys.modules.get(getattr(value, "__module__", None) or "")
                if isinstance(value, ModuleType):
                    h.update(digest(value).encode())
                elif _is_numba_object(value):  # inlined into the caller: its source counts
                    h.update(digest(dep).encode())
                elif callable(value) and home is not None and home.__name__.startswith(root):
                    # a function or class of the package (a code generator an intrinsic
                    # calls at compile time, say): the source of the module defining it
                    h.update(digest(home).encode())
                else:
                    h.update(_value_bytes(value))
    _DIGESTS[name] = h.hexdigest()
    return _DIGESTS[name]


def _cached_dispatchers(module: ModuleType) -> list:
    """The module's own numba functions compiled with ``cache=True``."""
    from numba.core.dispatcher import Dispatcher

    return [
        v
        for v in vars(module).values()
        if isinstance(v, Dispatcher)
        and getattr(v, "py_func", None) is not None
        and v.py_func.__module__ == module.__name__
        and type(getattr(v, "_cache", None)).__name__ != "NullCache"
    ]


def guard(module_name: str) -> None:
    """Key the numba cache of ``module_name``'s functions on :func:`digest` too.

    Call it at the end of a module that defines ``cache=True`` numba functions,
    before any of them is called: ``guard(__name__)``.

    Args:
        module_name: the module's ``__name__``.

    Returns:
        None. Each cached function's index stamp now carries the digest, so an index
        written for other sources is stale to numba and compiled afresh.

    Example:
        >>> import tying.hmm._numba_scaled as m
        >>> guard(m.__name__)  # done at its import already; a second call changes nothing
        >>> all(guarded(d) for d in _cached_dispatchers(m))
        True
    """
    module = sys.modules[module_name]
    try:
        mark = (_MARK, digest(module))
    except OSError as err:  # no readable source (a frozen or zipped install)
        mark = None
        why = f"its source cannot be read ({err})"
    for d in _cached_dispatchers(module):
        if mark is not None:
            try:
                cache_file = d._cache._cache_file  # numba's FunctionCache internals
                stamp = cache_file._source_stamp
                if not (isinstance(stamp, tuple) and len(stamp) == 2 and stamp[1] == mark):
                    if d.signatures:  # compiled already: loaded before this guard ran
                        raise RuntimeError(f"{d.py_func.__qualname__} was compiled unguarded")
                    cache_file._source_stamp = (stamp, mark)
                continue
            except (AttributeError, RuntimeError) as err:
                why = f"numba's cache internals are not as expected ({err})"
        from numba.core.caching import NullCache

        d._cache = NullCache()
        log.warning(
            "tying: %s.%s is compiled in every process, not cached on disk: %s, so a "
            "cached copy could not be checked against the current sources",
            module_name,
            d.py_func.__qualname__,
            why,
        )


def guarded(dispatcher) -> bool:
    """Whether ``dispatcher``'s cache is keyed on its module's :func:`digest`, or off.

    Args:
        dispatcher: a numba function.

    Returns:
        True when its on-disk cache cannot hand back code built from other sources.

    Example:
        >>> from tying.hmm._numba_scaled import fb_scaled
        >>> guarded(fb_scaled)
        True
    """
    cache = getattr(dispatcher, "_cache", None)
    if type(cache).__name__ == "NullCache":
        return True
    try:
        stamp = cache._cache_file._source_stamp
    except AttributeError:
        return False
    module = sys.modules[dispatcher.py_func.__module__]
    return isinstance(stamp, tuple) and len(stamp) == 2 and stamp[1] == (_MARK, digest(module))
