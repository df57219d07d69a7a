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


# -- stop 35: rules under which a slot reads itself --------------------------------------


@pytest.mark.parametrize(
    "like", ["means.1", {"means.1": "means.1"}, lambda slot: slot], ids=["str", "map", "call"]
)
def test_a_rule_without_wildcards_whose_slot_reads_itself_is_refused(like):
    # it tied nothing and raised nothing (a typo for the source)
    with pytest.raises(
        TieError, match=r"rule 0 .*every slot it matches reads itself .*ties nothing"
    ):
        resolve([share("means.1", like=like)], SLOTS)


def test_a_group_of_one_still_resolves_to_its_own_value():
    # the degenerate case of a real tie: one data set, one-member groups, a one-layer stack
    assert _sources(resolve([share("means.*", like="means.0")], ["means.0"])) == {"means.0": None}
    like = {s: s for s in SLOTS[:4]}
    assert _sources(resolve([share("means.*", like=like)], SLOTS)) == dict.fromkeys(like)


def test_a_slot_reading_itself_after_an_earlier_tie_is_refused_naming_both_rules():
    # resolve gave means.0 its own value, dropping rule 0, while Plan kept rule 0's tie
    rules = [share("means.0", like="prior"), share("means.*", like="means.0")]
    slots = [*SLOTS, "prior"]
    with pytest.raises(
        TieError,
        match=r"rule 1 .*'means\.0' reads itself .*rule 0 share\('means\.0', like='prior'\) "
        r"ties it to 'prior'.*move rule 0 after this one.*tying\.free\('means\.0'\) before",
    ):
        resolve(rules, slots)
    # each fix the message gives says which holds
    assert _sources(resolve([rules[1], rules[0]], slots))["means.0"] == "prior"
    freed = resolve([rules[0], free("means.0"), rules[1]], slots)
    assert _sources(freed)["means.0"] is None
