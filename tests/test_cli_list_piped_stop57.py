"""`tying list` into a pipe or file shows whole rows (stop 57): rich drew the table 80
columns wide and cut the claim, title and status columns to "…", so `tying list | grep`
found no claim code, title or status."""

from __future__ import annotations

from tying.cli import main
from tying.experiments.claims import CLAIMS


def test_list_into_a_pipe_prints_whole_rows(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    claim = next(c for c in CLAIMS if c.code)
    row = next(line for line in out.splitlines() if f" {claim.id} " in line)
    assert f" {claim.code} " in row and claim.title in row and " ready " in row, row
    assert "…" not in out


def test_an_explicit_columns_setting_is_kept(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 80
