"""The one resolver (issue 16): last match wins, captures, and one error shape."""

from __future__ import annotations

import pytest

from tying.core.errors import TieError
from tying.core.resolver import check_cycles, last_match_wins, resolve, roots
from tying.core.rules import free, share

SLOTS = [f"{kind}.{s}" for kind in ("means", "covars") for s in range(4)]


def _sources(won):
    return {slot: source for slot, (_, source) in won.items()}


def test_last_matching_rule_wins_and_free_makes_exceptions():
    rules = [share("means.*", like="means.0"), free("means.3"), share("means.3", like="means.1")]
    won = resolve(rules, SLOTS)
    assert _sources(won) == {
        "means.0": None,
        "means.1": "means.0",
        "means.2": "means.0",
        "means.3": "means.1",
    }
    assert won["means.3"][0] == 2 and won["means.2"][0] == 0
    assert roots(_sources(won), SLOTS)["means.3"] == "means.0"


def test_captures_mapping_and_callable_sources():
    slots = ["enc.0.w", "enc.1.w", "dec.0.w", "dec.1.w"]
    by_pattern = _sources(resolve([share("dec.*.w", like="enc.*.w")], slots))
    by_mapping = _sources(
        resolve([share("dec.*.w", like={"dec.0.w": "enc.0.w", "dec.1.w": "enc.1.w"})], slots)
    )
    by_callable = _sources(resolve([share("dec.*.w", like=lambda p: "enc" + p[3:])], slots))
    assert by_pattern == by_mapping == by_callable == {"dec.0.w": "enc.0.w", "dec.1.w": "enc.1.w"}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([share("mean.*", like="means.0")], r"rule 0 .*matches no slot; closest: means\.\d"),
        ([share("means.*", like="*.*.x")], r"rule 0 .*ambiguous pairing: like='\*\.\*\.x' has 2"),
        ([share("means.1", like="means.9")], r"rule 0 .*would read 'means\.9'.*closest: means\."),
        ([share("means.1", like={"means.2": "means.0"})], r"mapping has no entry for .*means\.1"),
        ([share("means.1", like=lambda p: 3)], r"like= returned 3 for 'means\.1'"),
        (
            [share("means.1", like="means.2"), share("means.2", like="means.1")],
            r"cycle of ties means\.1 -> means\.2 -> means\.1: .*let one slot",
        ),
    ],
)
def test_every_mistake_is_a_tie_error_naming_rule_slot_and_fix(rules, message):
    with pytest.raises(TieError, match=message):
        resolve(rules, SLOTS)


def test_package_check_hook_refuses_with_the_rule_named():
    def same_kind(index, rule, slot, source):
        if slot.split(".")[0] != source.split(".")[0]:
            raise TieError(f"rule {index} {rule!r}: {slot!r} cannot read {source!r}")

    with pytest.raises(TieError, match=r"rule 0 .*'means\.1' cannot read 'covars\.0'"):
        resolve([share("means.1", like="covars.0")], SLOTS, check=same_kind)


def test_check_cycles_accepts_chains_and_refuses_loops():
    check_cycles({"a": "b", "b": "c", "c": None})
    with pytest.raises(TieError, match="a -> b -> a"):
        check_cycles({"a": "b", "b": "a"})


def test_last_match_wins_for_smirks_style_rules():
    won = last_match_wins(
        [("generic", {1, 2, 3}), ("specific", {2}), ("late", {3})], lambda r: r[1]
    )
    assert {k: r[0] for k, r in won.items()} == {1: "generic", 2: "specific", 3: "late"}
