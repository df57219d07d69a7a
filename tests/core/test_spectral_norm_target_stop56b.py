"""Old-style torch.nn.utils.spectral_norm on a tied slot is refused by name (stop 56).

spectral_norm takes the weight from the module's ``_parameters``, where a tied slot is
not: the call failed with a bare ``KeyError: 'weight'`` that named no tie.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import tying


def _spectral_norm(module):
    with warnings.catch_warnings():  # torch deprecates it in favour of parametrizations
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.spectral_norm(module)


@pytest.mark.parametrize("relation", [None, tying.Transposed()], ids=["Same", "Transposed"])
def test_spectral_norm_on_a_tied_slot_names_the_tie_and_changes_nothing(relation):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    kw = {} if relation is None else {"relation": relation}
    tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    x = torch.randn(3, 4)
    before = m(x).detach()
    for copy_of in (lambda t: t, copy.deepcopy, lambda t: pickle.loads(pickle.dumps(t))):
        c = copy_of(m)
        with pytest.raises(
            tying.TieError,
            match=r"spectral_norm: 2\.weight is a tied slot \(reads 0\.weight.*weight_orig.*"
            r"nothing was changed.*free\('2\.weight'\)",
        ):
            _spectral_norm(c[2])
        assert not c[2]._forward_pre_hooks and set(c[2]._parameters) == {"bias"}
        torch.testing.assert_close(c(x), before)
        assert tying.verify(c) == 1
    with pytest.raises(KeyError, match="nothing"):  # other missing keys: the usual KeyError
        m[2]._parameters["nothing"]
    # the fix the message names works, and the untied module is plain again
    tying.Plan([tying.free("2.weight")]).apply(m)
    assert type(m[2]._parameters) is dict
    _spectral_norm(m[2])
    assert set(m[2]._parameters) == {"bias", "weight_orig"}
