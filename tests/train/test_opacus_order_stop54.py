"""Plain Opacus on a Plan-tied model is refused whatever ran before it in the process.

Stop 54: ``tying.train.grad_sample_module`` registers a tied class in Opacus' (global)
``GRAD_SAMPLERS``. Plain ``opacus.GradSampleModule`` on a ``Transposed``-tied autoencoder
was refused at its first forward only when ``grad_sample_module`` had run earlier in the
same process; in a fresh process Opacus' constructor deep-copies the unregistered tied
``dec`` (its functorch fallback) and is refused there, by core's deepcopy guard. The old
test pinned the first message only, and failed when run on its own (or on a fresh xdist
worker). Both orders are pinned here: refused either way, naming the tie.
"""

from __future__ import annotations

import pytest
import torch

import tying
from tests.train.models import TiedAE
from tying.core.slots import base_class
from tying.train.opacus_hooks import _own_params_sampler

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _registry(registered: bool, cls: type) -> dict:
    gs = dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    gs.pop(cls, None)
    if registered:  # what tying.train.grad_sample_module leaves behind (Opacus' extension point)
        gs[cls] = _own_params_sampler(base_class(TiedAE().dec))
    return gs


def test_plain_opacus_on_a_transposed_tie_is_refused_in_a_fresh_process(monkeypatch):
    model = TiedAE()
    monkeypatch.setattr(opacus.GradSampleModule, "GRAD_SAMPLERS", _registry(False, type(model.dec)))
    # lead: named as Opacus' copy, with the route (it read "copy.deepcopy of 'dec' ...
    # Copy the module the plan was applied to", a call the user never made)
    with pytest.raises(
        tying.TieError,
        match=r"Opacus \(opacus\..*\) deep-copies 'dec'.*dec\.weight reads enc\.weight.*"
        r"Transposed.*tying\.train\.grad_sample_module\(model\).*freshly built model",
    ):
        opacus.GradSampleModule(model)


def test_plain_opacus_on_a_transposed_tie_is_refused_after_grad_sample_module(monkeypatch):
    model = TiedAE()
    monkeypatch.setattr(opacus.GradSampleModule, "GRAD_SAMPLERS", _registry(True, type(model.dec)))
    gsm = opacus.GradSampleModule(model)
    x = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(
        tying.TieError,
        match=r"dec reads enc.weight through a tie that Opacus' GradSampleModule cannot see"
        r".*tying.train.grad_sample_module\(model\)",
    ):
        gsm(x)
    gsm._close()  # once Opacus lets go, the model works again
    model(x)


@pytest.mark.parametrize("x", [{"a": torch.randn(3, 4)}, [torch.randn(3, 4)]], ids=["dict", "list"])
def test_a_dict_or_list_batch_is_refused_naming_the_forms_that_run(x):
    """A dict of inputs was refused as 'x must be a tensor ..., got dict' with no word of
    the tuple form that runs; the step changes nothing."""
    from tying.train import DPSGD

    model = torch.nn.Linear(4, 2)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.1,
    )
    ce = lambda o, y: torch.nn.functional.cross_entropy(o, y, reduction="none")  # noqa: E731
    with pytest.raises(TypeError, match=r"x must be a tensor or a tuple of tensors.*model\(\*x\)"):
        dp.step(ce, x, torch.randint(0, 2, (3,)))
    assert dp.steps == 0
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
