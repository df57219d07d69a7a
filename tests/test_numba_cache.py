"""numba's on-disk cache must not hand back code built from other sources (tying._numba_cache).

numba keys a cached function on its own file only: a callee or a constant imported
from another file that changed was used stale, with no error. Each case builds a
small package in a temporary directory, runs it in a fresh process with its own
NUMBA_CACHE_DIR, changes one file other than the caller's, and runs it again.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

from tying import _numba_cache  # noqa: E402

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tying"

CALLER = """\
import numba
{imports}
from tying import _numba_cache


@numba.njit(cache=True)
def g(x):
    return {body}


{guard}
"""


def _package(tmp_path, files: dict[str, str]) -> pathlib.Path:
    root = tmp_path / "pkg"
    pkg = root / "numpkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return root


def _run(
    root, tmp_path, code="import numpkg.a as a; print(a.g(1.0), sum(a.g.stats.cache_hits.values()))"
):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(SRC.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1])  # (value, cache hits)


def _caller(imports, body, guarded=True):
    return CALLER.format(
        imports=imports, body=body, guard="_numba_cache.guard(__name__)" if guarded else ""
    )


def _rewrite_keeping_size(path: pathlib.Path, old: str, new: str) -> None:
    """Edit ``path`` without changing its size: numba's stamp of a file is mtime + size."""
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new))


def test_a_callee_changed_in_another_file_is_compiled_afresh(tmp_path):
    root = _package(
        tmp_path,
        {
            "b.py": "import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1.0\n",
            "a.py": _caller("from numpkg.b import f", "f(x) * 10.0"),
        },
    )
    assert _run(root, tmp_path) == (20.0, 0)  # compiled, cached
    assert _run(root, tmp_path) == (20.0, 1)  # loaded from the cache: the guard keeps it
    a_stat = (root / "numpkg" / "a.py").stat()
    _rewrite_keeping_size(root / "numpkg" / "b.py", "x + 1.0", "x + 2.0")
    os.utime(root / "numpkg" / "a.py", ns=(a_stat.st_atime_ns, a_stat.st_mtime_ns))
    # unguarded, numba loads g's machine code with the old f inlined and prints 20.0
    assert _run(root, tmp_path)[0] == 30.0


def test_a_constant_imported_from_a_plain_module_is_part_of_the_key(tmp_path):
    root = _package(
        tmp_path,
        {
            "consts.py": "TINY = 1e-300\nOTHER = 'unused'\n",
            "a.py": _caller("from numpkg.consts import TINY", "x if x > TINY * 1e300 else -x"),
        },
    )
    assert _run(root, tmp_path)[0] == -1.0  # 1.0 > 1.0 is false
    _rewrite_keeping_size(root / "numpkg" / "consts.py", "1e-300", "1e-301")
    assert _run(root, tmp_path)[0] == 1.0
    # a change elsewhere in that module, not in a value imported, keeps the cache
    _rewrite_keeping_size(root / "numpkg" / "consts.py", "'unused'", "'spare!'")
    value, hits = _run(root, tmp_path)
    assert (value, hits) == (1.0, 1)


def test_an_unguarded_module_is_what_the_guard_fixes(tmp_path):
    """The defect itself, so that this file fails if the guard stops doing its work."""
    root = _package(
        tmp_path,
        {
            "b.py": "import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1.0\n",
            "a.py": _caller("from numpkg.b import f", "f(x) * 10.0", guarded=False),
        },
    )
    assert _run(root, tmp_path)[0] == 20.0
    a_stat = (root / "numpkg" / "a.py").stat()
    _rewrite_keeping_size(root / "numpkg" / "b.py", "x + 1.0", "x + 2.0")
    os.utime(root / "numpkg" / "a.py", ns=(a_stat.st_atime_ns, a_stat.st_mtime_ns))
    stale = _run(root, tmp_path)[0]
    if stale != 20.0:
        pytest.skip(f"this numba ({stale}) sees callees in other files itself")
    (root / "numpkg" / "a.py").write_text(_caller("from numpkg.b import f", "f(x) * 10.0"))
    assert _run(root, tmp_path)[0] == 30.0


def _modules_with_cached_numba() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if re.search(r"cache[\"']?\s*[:=]\s*True\s*[,)}]", text) and "numba" in text:
            names.append(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
    return names


def test_every_tying_module_with_cached_numba_functions_is_guarded():
    names = _modules_with_cached_numba()
    assert "tying.hmm._numba_kernels" in names and "tying.nn._winograd_kernels" in names
    for name in names:
        module = importlib.import_module(name)
        dispatchers = _numba_cache._cached_dispatchers(module)
        assert dispatchers, f"{name}: no cached numba function found"
        unguarded = [d.py_func.__qualname__ for d in dispatchers if not _numba_cache.guarded(d)]
        assert not unguarded, (
            f"{name}: {unguarded} are cached on their own file only; end the module with "
            f"_numba_cache.guard(__name__)"
        )


def test_the_hmm_kernels_digest_follows_their_callees_and_constants(monkeypatch):
    import tying.hmm._numba_em as em
    import tying.hmm._numba_kernels as kernels

    forward_backward = importlib.import_module("tying.hmm.forward_backward")  # not the function

    before = _numba_cache.digest(kernels), _numba_cache.digest(em)
    monkeypatch.setattr(forward_backward, "TINY", forward_backward.TINY * 2)
    monkeypatch.setattr(_numba_cache, "_DIGESTS", {})
    assert _numba_cache.digest(kernels) != before[0]
    assert _numba_cache.digest(em) != before[1]  # em inlines kernels, which read TINY
    monkeypatch.setattr(forward_backward, "TINY", before_tiny := forward_backward.TINY / 2)
    monkeypatch.setattr(_numba_cache, "_DIGESTS", {})
    assert (_numba_cache.digest(kernels), _numba_cache.digest(em)) == before, before_tiny


def _probe(tmp_path, monkeypatch, name):
    """A module with one cached numba function, imported from a file of its own."""
    (tmp_path / f"{name}.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef h(x):\n    return x * 3.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_numba_internals_that_moved_turn_the_cache_off(tmp_path, monkeypatch, caplog):
    module = _probe(tmp_path, monkeypatch, "numpkg_internals_probe")

    class Moved:  # a cache without the attributes the guard reads
        pass

    module.h._cache = Moved()
    _numba_cache.guard(module.__name__)
    assert type(module.h._cache).__name__ == "NullCache"
    assert "numpkg_internals_probe.h is compiled in every process" in caplog.text
    assert module.h(2.0) == 6.0 and _numba_cache.guarded(module.h)


def test_a_function_compiled_before_the_guard_is_not_trusted(tmp_path, monkeypatch, caplog):
    module = _probe(tmp_path, monkeypatch, "numpkg_early_probe")
    assert module.h(2.0) == 6.0  # compiled (or loaded) before the guard: maybe stale
    _numba_cache.guard(module.__name__)
    assert type(module.h._cache).__name__ == "NullCache"
    assert "was compiled unguarded" in caplog.text


def test_a_helper_function_or_a_dict_of_options_imported_from_another_module_counts(
    tmp_path, monkeypatch
):
    """A code generator an intrinsic calls at compile time, and numba's options, are not
    numba objects: the helper counts by its module's source, the dict by its values."""
    root = _package(
        tmp_path,
        {
            "b.py": "OPTS = {'nogil': True}\n\n\ndef helper(x):\n    return x + 1\n",
            "a.py": "from numpkg.b import OPTS, helper\n",
        },
    )
    monkeypatch.syspath_prepend(str(root))
    a = importlib.import_module("numpkg.a")
    b = sys.modules["numpkg.b"]
    monkeypatch.setattr(_numba_cache, "_DIGESTS", {})
    before = _numba_cache.digest(a)
    _rewrite_keeping_size(root / "numpkg" / "b.py", "x + 1", "x + 2")
    monkeypatch.setattr(_numba_cache, "_DIGESTS", {})
    after_source = _numba_cache.digest(a)
    monkeypatch.setitem(b.OPTS, "nogil", False)
    monkeypatch.setattr(_numba_cache, "_DIGESTS", {})
    after_options = _numba_cache.digest(a)
    assert len({before, after_source, after_options}) == 3
