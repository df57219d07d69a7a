"""Stop 40: ``mlp`` takes an activation class, ``TiedAutoencoder`` an instance; each mixed up.

``TiedAutoencoder(activation=nn.ReLU)`` called ``nn.ReLU(code)``, i.e. ``ReLU(inplace=code)``:
``encode`` returned a module instead of a tensor, with no error. ``mlp(activation=nn.ReLU())``
failed with "forward() missing 1 required positional argument", or, for two sizes, was taken
and never used.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tying.nn import TiedAutoencoder, mlp

ACTS = [nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.Softplus]


@pytest.mark.parametrize("act", ACTS)
def test_autoencoder_refuses_an_activation_class_naming_the_instance(act):
    with pytest.raises(
        TypeError, match=rf"got the class {act.__name__}; .* activation=nn.ReLU\(\)"
    ):
        TiedAutoencoder(6, 3, activation=act)


def test_autoencoder_refuses_a_non_callable_activation():
    with pytest.raises(TypeError, match="got str"):
        TiedAutoencoder(6, 3, activation="relu")


@pytest.mark.parametrize("act", ACTS)
def test_mlp_refuses_an_activation_instance_even_with_no_hidden_layer(act):
    for sizes in ([2, 8, 1], [2, 1]):
        with pytest.raises(TypeError, match=rf"an instance of {act.__name__}; pass the class"):
            mlp(sizes, activation=act())


@settings(derandomize=True, deadline=None, max_examples=15)
@given(act=st.sampled_from(ACTS), d=st.integers(2, 6), k=st.integers(1, 4), seed=st.integers(0, 99))
def test_property_both_forms_compute_the_hand_written_network(act, d, k, seed):
    """Each helper with the form it takes equals the network written out in plain torch."""
    torch.manual_seed(seed)
    x = torch.randn(5, d, dtype=torch.float64)
    ae = TiedAutoencoder(d, k, activation=act()).double()
    w = ae.encoder.weight
    torch.testing.assert_close(ae(x), act()(x @ w.T) @ w)
    for form in (act, functools.partial(act)):
        net = mlp([d, k, 1], activation=form).double()
        lin0, lin1 = net[0], net[2]
        want = act()(x @ lin0.weight.T + lin0.bias) @ lin1.weight.T + lin1.bias
        torch.testing.assert_close(net(x), want)
