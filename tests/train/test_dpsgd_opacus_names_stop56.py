"""Opacus make_private keywords and get_epsilon on DPSGD name ours (stop 56)."""

import copy
import pickle

import pytest
import torch

from tying.train import DPSGD


def _dp(**extra):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return DPSGD(model, opt, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, **extra)


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        (
            "clipping",
            "per_layer",
            r"DPSGD clips flat .*'per_layer' and 'adaptive' are not provided",
        ),
        ("clipping", "flat", r"so drop it"),
        ("poisson_sampling", True, r"tying\.train\.poisson_batches\(n, sample_rate"),
        ("loss_reduction", "mean", r"reduction='none'.*n_data=n"),
        ("grad_sample_mode", "hooks", r"mode='vmap' is Opacus' 'functorch'.*grad_sample_module"),
        ("batch_first", True, r"always the first dimension"),
        ("noise_generator", None, r"generator="),
    ],
)
def test_make_private_keyword_names_ours(name, value, hint):
    with pytest.raises(TypeError, match=rf"DPSGD: no keyword '{name}' here; .*{hint}"):
        _dp(**{name: value})


def test_other_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'noise'"):
        _dp(noise=1.0)


def test_get_epsilon_names_epsilon_and_the_accountant():
    dp = _dp()
    with pytest.raises(
        AttributeError,
        match=r"no attribute 'get_epsilon' .*use dp\.epsilon\(delta\).*accountant='prv'",
    ):
        dp.get_epsilon(1e-5)
    assert not hasattr(dp, "get_epsilon")
    with pytest.raises(AttributeError, match=r"'DPSGD' object has no attribute 'epsilonn'"):
        dp.epsilonn  # noqa: B018
    # __getattr__ leaves copying and pickling as they were
    for clone in (copy.deepcopy(dp), pickle.loads(pickle.dumps(dp))):
        assert clone.steps == 0 and clone.epsilon(1e-5) == 0.0
