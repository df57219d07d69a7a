"""``tying run --out DIR`` prints where its figures are: inside DIR (stop 61).

It printed ``figures: figures/param-counts--counts.png``, a path relative to ``--out``
that does not exist where the command was typed.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib

from rich.console import Console

import tying.cli as cli
from tying.experiments.output import record_files
from tying.experiments.runner import RunRecord


def _fake_run(exp_id, *, size, seed, out_dir):
    """What run_experiment does for a passing experiment with one figure, without running one."""
    rel = f"figures/{exp_id}--counts.png"
    (out_dir / rel).write_bytes(b"PNG")
    record_files(out_dir, [rel])
    return RunRecord(
        id=exp_id, title="t", claim="c", chapter="003", size=size, seed=seed, status="pass",
        measured={"n": 1}, figures=[rel],
    )  # fmt: skip


def test_run_prints_figure_paths_that_exist_from_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "run_experiment", _fake_run)
    out = pathlib.Path("a folder") / "ü"  # relative, with a space and a non-ASCII letter
    args = argparse.Namespace(out=out, timeout=None, size="quick", seed=0)
    text = io.StringIO()
    assert cli._run_one(args, Console(file=text, width=400), "param-counts") == cli.EXIT_PASS
    shown = out / "figures" / "param-counts--counts.png"
    assert f"figures: {shown}\n" in text.getvalue()  # was figures: figures/param-counts--...
    assert os.path.isfile(shown)  # the path as printed, from where the command ran
