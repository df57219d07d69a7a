"""Without the chem extra, tying.chem says which extra to install; the registry still loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("rdkit")

from tying.chem.errors import MissingExtraError, missing_extra  # noqa: E402


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_missing_rdkit_names_the_extra():
    out = _run(
        """
        import sys
        sys.modules["rdkit"] = None  # as if RDKit were not installed
        try:
            import tying.chem
        except ImportError as err:
            print(type(err).__name__, err)
        """
    )
    assert "MissingExtraError tying.chem needs RDKit" in out.stdout, out.stderr
    assert "pip install 'tying[chem]'" in out.stdout


def test_experiment_registers_without_rdkit():
    out = _run(
        """
        import sys
        sys.modules["rdkit"] = None
        from tying.experiments.smirks_typing import smirks_typing
        print(smirks_typing.spec.id, smirks_typing.spec.requires)
        try:
            smirks_typing("quick", 0)
        except ImportError as err:
            print("raised:", err)
        """
    )
    assert "smirks-typing ('rdkit', 'openforcefields')" in out.stdout, out.stderr
    assert "raised: tying.chem needs RDKit" in out.stdout


def test_missing_extra_is_an_import_error():
    err = missing_extra("the OpenFF force fields", ImportError("x"))
    assert isinstance(err, MissingExtraError) and isinstance(err, ImportError)
