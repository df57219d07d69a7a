"""The registry contract other workers write experiments against."""

from __future__ import annotations

import doctest

import pytest

import tying.experiments.registry as registry_module
from tying.experiments import IMPORT_ERRORS, REGISTRY, SIZES, Result, Table, get, load_all
from tying.experiments.claims import CHAPTER_FILES, claim_for
from tying.experiments.registry import check_size, experiment

OURS = {
    "param-counts",
    "conv-is-tied-lc",
    "sample-efficiency",
    "rnn-unrolled",
    "landscape-symmetry",
    "bptt-sum",
    "tied-init",
    "symmetry-breaking",
}


def test_load_all_registers_the_first_eight_and_no_import_errors():
    registry = load_all()
    assert OURS <= set(registry)
    assert not {
        k: v
        for k, v in IMPORT_ERRORS.items()
        if k in {"principles", "symmetry", "gradients", "sample_efficiency"}
    }


def test_every_registered_experiment_names_a_claim_and_a_chapter():
    for exp_id, spec in load_all().items():
        assert claim_for(exp_id) is not None, f"{exp_id} is not a claim id of CLAIMS.md"
        assert spec.chapter in CHAPTER_FILES, f"{exp_id}: unknown chapter {spec.chapter!r}"
        assert spec.claim.strip() and spec.title.strip()


def test_an_id_missing_from_the_claims_table_is_a_clear_error():
    with pytest.raises(
        KeyError,
        match=r"'hashed-clicks' is not a claim id in tying/experiments/claims.py.*add a Claim row",
    ):
        experiment("hashed-clicks")
    assert "hashed-clicks" not in REGISTRY


def test_old_style_keywords_say_where_the_text_lives():
    with pytest.raises(
        TypeError, match=r"takes the claim id only, got claim, seed_file, title=.*claims.py"
    ):
        experiment("param-counts", title="t", claim="c", seed_file="003")


def test_get_unknown_id_names_the_closest():
    load_all()
    with pytest.raises(KeyError, match=r"unknown experiment id 'param-count'.*'param-counts'"):
        get("param-count")


def test_duplicate_id_is_an_error(temp_experiment):
    def one(size, seed):
        return Result(passed=True, measured={"x": 1.0})

    def two(size, seed):
        return Result(passed=True, measured={"x": 1.0})

    temp_experiment("dup-test", one)
    with pytest.raises(ValueError, match="registered twice"):
        experiment("dup-test")(two)
    assert REGISTRY["dup-test"].fn is one


def test_register_false_leaves_the_registry_alone():
    REGISTRY_before = dict(REGISTRY)

    @experiment("param-counts", register=False)
    def fn(size, seed):
        return Result(passed=True, measured={"x": 1.0})

    assert fn.spec.id == "param-counts" and REGISTRY == REGISTRY_before


def test_check_size():
    assert SIZES == ("quick", "report")
    check_size("quick")
    with pytest.raises(ValueError, match=r"size must be one of \('quick', 'report'\), got 'big'"):
        check_size("big")


def test_table_columns_keep_first_seen_order():
    t = Table("t", rows=[{"a": 1, "b": 2}, {"b": 3, "c": 4}])
    assert t.columns == ["a", "b", "c"]


def test_registry_doctest():
    result = doctest.testmod(registry_module)
    assert result.attempted > 0 and result.failed == 0
