"""Every public docstring example runs (STYLE rule 3), and so does the README tour."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re
import sys
import types

import pytest

import tying

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tying.__path__, "tying.")
    if not info.name.startswith("tying.experiments.") or info.name.endswith("registry")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # an optional extra that is not installed
        pytest.skip(f"{name}: {err}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    from tying.experiments.registry import REGISTRY

    before = dict(REGISTRY)
    for i, block in enumerate(blocks):
        # a real module, so that dataclasses defined in an example can resolve it
        module = types.ModuleType(f"readme_example_{i}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        try:
            exec(compile(block, str(README), "exec"), module.__dict__)
        finally:
            # an example may register an experiment: keep it out of the real registry
            REGISTRY.clear()
            REGISTRY.update(before)


@pytest.mark.parametrize(
    "module",
    [
        "tying",
        "tying.chem",
        "tying.hmm",
        "tying.core.patterns",
        "tying.core.errors",
        "tying.core.resolver",
    ],
)
def test_numpy_packages_import_without_torch(module):
    """Issue 16: the NumPy-only packages do not pay for (or need) torch at import."""
    import subprocess

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"import {module} imported torch"


def test_lazy_engine_names_are_not_shadowed_by_submodules():
    """`tying.core.count` is the function even after the module of that name is imported."""
    import tying.core
    import tying.core.count
    import tying.core.verify

    assert callable(tying.core.count) and not isinstance(tying.core.count, types.ModuleType)
    assert tying.count is tying.core.count
    assert tying.verify is tying.core.verify
    assert set(tying.__all__) <= set(dir(tying))


def test_a_numpy_global_fit_runs_without_importing_torch():
    """Issue 16: fitting (and counting) a NumPy model never loads torch."""
    import subprocess

    code = (
        "import sys, numpy as np, tying, tying.fit\n"
        "x = np.linspace(0, 1, 20)\n"
        "fit = tying.fit.GlobalFit(lambda x, a, b: a * np.exp(-b * x), [(x, 2 * np.exp(-3 * x))],"
        " shared=['a', 'b'], init={'a': 1.0, 'b': 1.0})\n"
        "assert fit.run().success and tying.count(fit).physical == 2\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
