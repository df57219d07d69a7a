"""Stop 60: a ``like=`` mapping without an entry for a matched path said "add it", and a
``like=`` callable returning None said "expected a path str", without saying with what. The
path left out is most often the tie's source itself (``share("l.*.weight", like={"l.1.weight":
"l.0.weight", ...})``). The refusal now names the entry that works, followed here as written:
the path mapped to itself, and under a relation (where that is a cycle) a later ``free``.
"""

import re

import pytest
import torch
from torch import nn

import tying


def _stack():
    return nn.ModuleDict({"l": nn.ModuleList(nn.Linear(3, 3) for _ in range(4))})


_REST = {f"l.{i}.weight": "l.0.weight" for i in (1, 2, 3)}


def test_a_mapping_without_the_source_names_the_self_entry_and_it_works():
    model = _stack()
    with pytest.raises(tying.TieError) as err:
        tying.Plan([tying.share("l.*.weight", like=_REST)]).apply(model)
    entry = re.search(r"maps to itself: (\{.*?\})", str(err.value)).group(1)
    assert entry == "{'l.0.weight': 'l.0.weight'}"
    tying.Plan([tying.share("l.*.weight", like={**eval(entry), **_REST})]).apply(model)
    assert all(model.l[i].weight is model.l[0].weight for i in range(4))


def test_under_a_relation_the_advice_adds_the_later_free_and_it_works():
    model = _stack()
    rel = tying.Transposed()
    with pytest.raises(
        tying.TieError,
        match=r"maps to itself: \{'l\.0\.weight': 'l\.0\.weight'\}, then take it out with a "
        r"later tying\.free\('l\.0\.weight'\)",
    ):
        tying.Plan([tying.share("l.*.weight", like=_REST, relation=rel)]).apply(model)
    own = {"l.0.weight": "l.0.weight", **_REST}
    tying.Plan([tying.share("l.*.weight", like=own, relation=rel), tying.free("l.0.weight")]).apply(
        model
    )
    w0 = model.l[0].weight
    assert all(torch.equal(model.l[i].weight, w0.T) for i in (1, 2, 3))


def test_a_callable_returning_none_names_the_path_itself():
    model = _stack()

    def like(path):
        return _REST.get(path)

    with pytest.raises(tying.TieError, match=r"returned None.*may return itself: 'l\.0\.weight'"):
        tying.Plan([tying.share("l.*.weight", like=like)]).apply(model)
    tying.Plan([tying.share("l.*.weight", like=lambda p: _REST.get(p, p))]).apply(model)
    assert all(model.l[i].weight is model.l[0].weight for i in range(4))
