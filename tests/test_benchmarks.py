"""Every benchmark still runs end to end (``TYING_BENCH_SMOKE=1``: one timing each, small shapes).

The figures of a smoke run mean nothing; what this catches is a benchmark that an
API change broke, which would otherwise surface only when someone re-measures a
goal. Each benchmark runs in its own process, as ``python -m benchmarks NAME`` does,
and writes to a temporary folder, never to ``bench-results/`` (the docs' tables).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem[len("bench_") :] for p in (ROOT / "benchmarks").glob("bench_*.py"))


def _non_finite(value, where: str) -> list[str]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _non_finite(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [bad for i, v in enumerate(value) for bad in _non_finite(v, f"{where}[{i}]")]
    return []


def test_every_benchmark_is_listed():
    assert len(NAMES) >= 10, NAMES  # the glob found the benchmarks, not an empty folder


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_runs_at_smoke_size(name, tmp_path):
    pytest.importorskip("numba", reason="the benchmarks need the bench extra")
    out = tmp_path / "results"
    env = dict(
        os.environ,
        TYING_BENCH_SMOKE="1",
        TYING_BENCH_OUT=str(out),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", name],
        cwd=tmp_path,  # a stray relative write would land here, not in the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"benchmark {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    written = sorted(out.glob("*.json"))
    assert written, f"benchmark {name} wrote no results to {out}"
    assert not (tmp_path / "bench-results").exists(), "a benchmark ignored TYING_BENCH_OUT"
    for path in written:
        rows = json.loads(path.read_text())
        assert isinstance(rows, list) and rows, f"{path.name}: no rows"
        assert all(isinstance(r, dict) and r for r in rows), f"{path.name}: a row is not a record"
        bad = _non_finite(rows, path.stem)
        assert not bad, f"{path.name}: NaN or inf in {bad[:5]}"
