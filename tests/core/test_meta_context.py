"""Ties made under ``with torch.device("meta")`` in a fresh process (nothing cached yet).

The first tie made in a process under that context used to fail ("Cannot copy out of
meta tensor"): the read check's sample positions were a bare ``torch.linspace``, which
the context made meta. Later ties worked, so the failure depended on test order; each
case here runs in its own interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CASES = {
    "plan": """
        m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 4), "b": torch.nn.Linear(4, 3)})
        tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Transposed())]).apply(m)
        assert m["b"].weight.is_meta and m["b"].weight.shape == (3, 4)
    """,
    "cpu-model-read-under-the-context": """
        m = torch.nn.ModuleDict({"b": torch.nn.Linear(4, 4, device="cpu")})
        tying.Plan([tying.share("b.weight", relation=tying.Mirrored())]).apply(m)
        first = m["b"].weight  # a fresh tensor: the read keeps a sample of it to check later
        assert not first.is_meta and torch.equal(m["b"].weight, first)
    """,
    "group-conv": """
        import tying.nn
        layer = tying.nn.GroupConv2d(3, 5, 3, group="C4")
        assert layer(torch.randn(2, 3, 4, 9, 9, device="meta")).is_meta
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_first_tie_made_under_a_meta_device_context_works(case):
    code = "import torch, tying\nwith torch.device('meta'):\n" + textwrap.indent(
        textwrap.dedent(CASES[case]), "    "
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
