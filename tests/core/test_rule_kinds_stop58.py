"""A rule tying a module to a parameter (or back) says so, and its advice works (stop 58).

``share("l.1", like="l.0.weight")`` was refused as "source module 'l.0.weight' (for
'l.1') does not exist; closest: l.0.weight, ...": the path the user typed offered as the
closest match to itself, and no word that a module needs a module. The other way
round, ``share("l.1.weight", like="l.0")`` read "'l.0' (for 'l.1.weight') is no
parameter; closest: l.0, ...". Both now name the two kinds and the rules that work.
An exception raised inside a ``like=`` callable now carries a note naming the rule and
the matched path (a bare ``KeyError: 'l.0.weight'`` before).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import tying
from tests.core.helpers import sgd_step


def _model():
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "l": nn.ModuleList(nn.Linear(4, 4) for _ in range(3)),
            "bn": nn.ModuleList(nn.BatchNorm1d(4) for _ in range(2)),
            "h": nn.Linear(4, 2),
        }
    )


def _unchanged(m, before):
    return all(torch.equal(before[k], v) for k, v in m.state_dict().items()) and not tying.ties(m)


@pytest.mark.parametrize(
    ("rule", "message", "fixes"),
    [
        (
            tying.share("l.2", like="l.0.weight"),
            r"'l\.2' is a module, so its source must be a module, but 'l\.0\.weight' is a "
            r"parameter; share\('l\.2\.weight', like='l\.0\.weight'\) ties that parameter; "
            r"or share\('l\.2', like='l\.0'\) ties the whole module$",
            [tying.share("l.2.weight", like="l.0.weight"), tying.share("l.2", like="l.0")],
        ),
        (
            tying.share("l.*.weight", like="l.0"),
            # the first slot matched is l.0.weight itself: tying l.0 to itself is no fix
            r"'l\.0\.weight' is a parameter, so its source must be a parameter, but 'l\.0' is "
            r"a module; like='l\.0\.weight' ties that parameter$",
            [tying.share("l.*.weight", like="l.0.weight")],
        ),
        (
            tying.share("l.2.weight", like="l.0"),
            r"'l\.2\.weight' is a parameter, so its source must be a parameter, but 'l\.0' is "
            r"a module; like='l\.0\.weight' ties that parameter; or share\('l\.2', "
            r"like='l\.0'\) ties the whole module$",
            [tying.share("l.2.weight", like="l.0.weight"), tying.share("l.2", like="l.0")],
        ),
        (
            tying.share("bn.1", like="bn.0.running_mean"),
            r"'bn\.0\.running_mean' is a buffer \(ties are for parameters\); "
            r"share\('bn\.1', like='bn\.0'\) ties the whole module$",
            [tying.share("bn.1", like="bn.0")],
        ),
    ],
)
def test_module_and_parameter_mixed_in_one_rule_named_with_working_fixes(rule, message, fixes):
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(tying.TieError, match=message) as err:
        tying.Plan([rule]).apply(m)
    assert "closest" not in str(err.value) and "does not exist" not in str(err.value)
    assert _unchanged(m, before)
    for fix in fixes:  # every rule the message offers applies, and the tie trains as one
        fixed = _model()
        tying.Plan([fix]).apply(fixed)
        assert fixed.l[2].weight is fixed.l[0].weight or fixed.bn[1].weight is fixed.bn[0].weight
        sgd_step(fixed, fixed.l[2](torch.randn(2, 4)).sum() + fixed.bn[1].weight.sum())
        assert tying.verify(fixed) >= 1


def test_no_fix_offered_where_none_fits():
    # 'h' differs from 'l.0' in shape but not in structure; a Linear's weight has no
    # counterpart inside a BatchNorm list, so only the kind is named
    with pytest.raises(tying.TieError, match=r"is a module; name a parameter in like=$"):
        tying.Plan([tying.share("h.weight", like="bn")]).apply(_model())


def test_missing_paths_keep_the_closest_hint():
    with pytest.raises(tying.TieError, match=r"source module 'l\.7' \(for 'l\.1'\) does not exist"):
        tying.Plan([tying.share("l.1", like="l.7")]).apply(_model())
    with pytest.raises(tying.TieError, match=r"'l\.0\.wieght' \(for 'l\.1\.weight'\) is no param"):
        tying.Plan([tying.share("l.1.weight", like="l.0.wieght")]).apply(_model())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
def test_an_error_inside_a_like_callable_names_the_rule_and_path_and_changes_nothing():
    m = _model()
    table = {"l.1.weight": "l.0.weight", "l.2.weight": "l.0.weight"}
    rule = tying.share("l.*.weight", like=lambda path: table[path])
    with pytest.raises(KeyError, match="l.0.weight") as err:  # the type stays the user's
        tying.Plan([rule]).apply(m)
    assert err.value.__notes__ == [
        "raised by like= of rule 0 share('l.*.weight', like=<function>) for the matched "
        "path 'l.0.weight': like= must return a source path for every path the target "
        "matches (a path that reads itself may return itself, or narrow the target); "
        "nothing was changed"
    ]
    assert not tying.ties(m)
    table["l.0.weight"] = "l.0.weight"  # the advice: the source may read itself
    assert tying.Plan([rule]).apply(m).tied == {
        "l.1.weight": "l.0.weight",
        "l.2.weight": "l.0.weight",
    }
    assert m.l[2].weight is m.l[1].weight is m.l[0].weight
