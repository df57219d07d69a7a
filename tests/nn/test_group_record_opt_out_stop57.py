"""The cross-group refusal names the opt-out, and following it loads (STYLE rule: the opt-out)."""

import pytest
import torch

from tying.nn import LiftingConv2d


def test_the_cross_group_refusal_names_a_way_to_load_on_purpose():
    sd = LiftingConv2d(1, 4, 3, group="C4").state_dict()
    d4 = LiftingConv2d(1, 4, 3, group="D4")
    with pytest.raises(ValueError, match=r"dict\(state_dict\)"):  # fails today: no opt-out named
        d4.load_state_dict(sd)
    d4.load_state_dict(dict(sd))  # following it loads the C4 kernel into the D4 layer
    assert torch.equal(d4.state_dict()["kernels.e"], sd["kernels.e"])
