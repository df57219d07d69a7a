"""``write_report`` never leaves a half-written page; scalars read as the numbers they hold.

``index.html`` and ``results.json`` were written with ``Path.write_bytes``, which
truncates the old file first: a full disk (here: a file-size limit) in the middle left
a cut-off ``index.html`` and the old report gone. NumPy and torch scalars in tables
printed as ``1234567`` (no separators, beside ``1,234,567``), ``True`` and
``tensor(3)``.
"""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.experiments.runner import RunRecord
from tying.report import MANIFEST, claim_folder, write_report
from tying.report.format import format_value

try:
    import resource
except ImportError:  # not on Windows: only the file-size-limit test needs it
    resource = None


def _record(notes: str = "") -> RunRecord:
    return RunRecord(
        "param-counts", "t", "c.", "003", "quick", 0, "pass", measured={"x": 1.0}, notes=notes
    )


def _files(out):
    """Every file but the manifest (which ``write_report`` updates before it writes)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "rep"
    claim_folder(out, ["param-counts"], fresh=True)
    write_report([_record()], out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    return out


@pytest.fixture
def file_size_limit():
    """Files this process writes may not pass ``limit`` bytes (EFBIG, as a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(n):  # None: back to the limit the test started with
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if n is None else n, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.skipif(resource is None, reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_write_that_fails_midway_leaves_the_old_report_whole(folder, file_size_limit):
    before = _files(folder)
    assert len(before["index.html"]) < 40_000
    big = _record(notes="n" * 200_000)  # the new page cannot be written in full
    file_size_limit(40_000)
    with pytest.raises(OSError):
        write_report([big], folder, size="quick", seed=0, jobs=1, runtime_s=1.0)
    file_size_limit(None)
    # old code: index.html cut at 40,000 bytes, the old report lost
    assert _files(folder) == before  # and no temporary file left behind
    claim_folder(folder, ["param-counts"], fresh=False, writes_page=True)  # all still ours
    # and the same write works once the disk has room
    write_report([big], folder, size="quick", seed=0, jobs=1, runtime_s=1.0)
    assert (folder / "index.html").read_text(encoding="utf-8").rstrip().endswith("</html>")


def test_the_page_gets_the_usual_file_mode(folder):
    mask = os.umask(0o22)
    os.umask(mask)
    for name in ("index.html", "results.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~mask


SCALARS = [np.int8, np.int64, np.uint32, np.float16, np.float32, np.float64, np.bool_]


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    st.sampled_from(SCALARS + ["torch-float32", "torch-int64", "torch-bool", "torch-bfloat16"]),
    st.one_of(
        st.floats(-6e4, 6e4),  # float16 holds up to 65,504
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-5, 1234567.0]),
    ),
)
def test_a_numpy_or_torch_scalar_reads_as_its_python_number(kind, x):
    # reference: the same value as the Python number it holds
    if kind in (np.bool_, "torch-bool"):
        x = bool(x)
    elif kind in (np.int8, np.int64, np.uint32, "torch-int64"):
        if not math.isfinite(x):
            return
        x = int(x)
        x = x % 100 if kind in (np.int8, np.uint32) else x
    if isinstance(kind, str):
        dtype = getattr(torch, kind.split("-")[1])
        value = torch.tensor(x, dtype=dtype)
    elif kind is np.float16 and abs(x) > 6e4:
        return
    else:
        value = kind(x)
    held = value.item()
    whole = isinstance(held, float) and math.isfinite(held) and held == int(held)
    if whole:  # a whole narrow float keeps the number it holds (torch prints 1032.)
        pass
    elif kind in (np.float16, np.float32, "torch-float32") and math.isfinite(held):
        # a narrower float reads as the shortest decimal of its precision, as NumPy
        # prints it (np.float32(0.1) is 0.1, not 0.100000001; stop 61)
        held = float(str(np.float16(held) if kind is np.float16 else np.float32(held)))
    elif kind == "torch-bfloat16" and math.isfinite(held):
        held = next(
            float(f"{held:.{n}g}")
            for n in range(1, 18)
            if torch.tensor(float(f"{held:.{n}g}"), dtype=torch.bfloat16) == value
        )
    assert format_value(value) == format_value(held)
    assert format_value([value]) == f"[{format_value(held)}]"


def test_scalars_as_a_person_reads_them():
    assert format_value(np.int64(1234567)) == "1,234,567"
    assert format_value(np.True_) == "yes"
    assert format_value(torch.tensor(3)) == "3"
    assert format_value(np.float32(7486.0)) == "7,486"
