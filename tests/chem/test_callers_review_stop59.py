"""Callers review of stop 59 (7ae9ada..HEAD): behaviour changed today that other code relied on.

- laplacian_penalty now refuses an edge given both ways unless ``undirected=`` says how it
  counts (6c4ea3d); ``MultiTaskNet.soft_penalty`` and ``fit_multitask`` take it (37326f9)
  and fit_multitask refuses such a list at any lam (bb29b6d), but docs/train.md, where a
  multi-task user reads about ``soft_penalty(edges, lam)``, does not name the argument.
  (The stop-38 property test that this refusal broke was mended in bb29b6d.)
- ``Quantity ==`` (45c5504, 4ffeea4): exact within one unit, 13 significant digits in the
  reference unit across two units. That is no equivalence: 9.000000000001 and
  9.000000000002 kJ/mol (13 digits each, as files write) differ, yet both equal one kcal/mol
  value, so a set of the three holds 2 or 1 values by the order of insertion (the review
  commit said it fixed exactly this); the same with 1.0000000000001 A, 0.1 nm and 1.0 A.
"""

from __future__ import annotations

import pathlib

import tying
from tying.chem import parse_quantity

ROOT = pathlib.Path(tying.__file__).resolve().parents[2]


def test_train_docs_name_undirected_for_soft_penalty_and_fit_multitask():
    text = (ROOT / "docs" / "train.md").read_text()
    head = text[: text.index("**Fast/slow weights (C7).**")]  # the multi-task paragraph
    assert "soft_penalty(edges, lam)" in head
    assert "undirected=True" in head and "fit_multitask(..., undirected=" in head


def test_quantity_equality_is_an_equivalence_within_and_across_units():
    x1 = parse_quantity("9.000000000001 * kilojoule / mole")  # 13 digits, as files write
    x2 = parse_quantity("9.000000000002 * kilojoule / mole")
    y = x1.to("kilocalorie / mole")
    # at HEAD: x1 == y and x2 == y, but x1 != x2
    assert (x1 == y and x2 == y) <= (x1 == x2)
    assert len({x1, x2, y}) == len({y, x1, x2}) == len({x2, y, x1})  # HEAD: 2, 1, 2
    a = parse_quantity("1.0000000000001 * angstrom")
    b = parse_quantity("0.1 * nanometer")
    c = parse_quantity("1.0 * angstrom")
    assert (a == b and b == c) <= (a == c)
    assert len({a, b, c}) == len({b, a, c}) == len({c, a, b})  # HEAD: 2, 1, 2
    # what the rule keeps: 13 digits apart stay apart, one value in two units is one value
    assert parse_quantity("1.525970013793 * angstrom") != parse_quantity(
        "0.1525970013794 * nanometer"
    )
    assert parse_quantity("1.525970013793 * angstrom") == parse_quantity(
        "0.1525970013793 * nanometer"
    )
    assert parse_quantity("1.5 * angstrom") != parse_quantity("1.500000000001 * angstrom")
