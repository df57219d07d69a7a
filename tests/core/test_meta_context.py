"""Ties made under ``with torch.device("meta")`` in a fresh process (nothing cached yet).

The first tie made in a process under that context used to fail ("Cannot copy out of
meta tensor"): the read check's sample positions were a bare ``torch.linspace``, which
the context made meta. Later ties worked, so the failure depended on test order; each
case here runs in a process that has made no tie yet.

One interpreter imports torch and tying (outside the context, as a user's script does)
and forks one child per case, so each case is still the first tie of its process; the
import is paid once, not once per case (stop 53: three interpreters took 16-30 s in CI).
"""

from __future__ import annotations

import json
import os
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


#: the interpreter: imports once, then per case forks a child that runs the case under
#: the context and reports its exit status and error text (as JSON on the last line)
RUNNER = """
import json, os, sys, traceback
import torch, tying

cases = json.loads(sys.argv[1])
out = {}
for name, code in cases.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no tie was made in this process before
        os.close(read)
        status = 0
        try:
            exec(code, {"torch": torch, "tying": tying})
        except BaseException:
            status = 1
            os.write(write, traceback.format_exc()[-2000:].encode())
        os.close(write)
        os._exit(status)
    os.close(write)
    with os.fdopen(read) as fh:
        err = fh.read()
    _, status = os.waitpid(pid, 0)
    out[name] = [os.waitstatus_to_exitcode(status), err]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict:
    codes = {
        name: "with torch.device('meta'):\n" + textwrap.indent(textwrap.dedent(code), "    ")
        for name, code in CASES.items()
    }
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(codes)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_first_tie_made_under_a_meta_device_context_works(case, outcomes):
    status, err = outcomes[case]
    assert status == 0, err
