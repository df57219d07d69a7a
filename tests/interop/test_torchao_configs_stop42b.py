"""``tying.interop.quantization.quantize_`` with every torchao config (stop 42).

Each config that runs on this CPU: a module tied whole is quantized once (one
quantized tensor read by both uses) and the outputs equal torchao's ``quantize_`` on
an untied copy. ``FqnToConfig`` (also ``ModuleFqnToConfig`` / ``AOPerModuleConfig``)
failed with torchao's "Custom filter_fn and FqnToConfig were both specified", about
a filter_fn the caller never passed; it is a ``TypeError`` naming the way that works.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch
from torch import nn

import tying
from tying.interop.quantization import quantize_

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torchao.quantization as tq
    from torchao.core.config import AOBaseConfig

# configs that run with their defaults on a CPU (Int4WeightOnlyConfig leaves a CPU
# weight float in torchao itself: equal, trivially, and kept to catch a change)
RUNS_HERE = [
    "Float8WeightOnlyConfig",
    "Int4WeightOnlyConfig",
    "Int8DynamicActivationInt8WeightConfig",
    "Int8DynamicActivationIntxWeightConfig",
    "Int8WeightOnlyConfig",
    "IntxWeightOnlyConfig",
]
REFUSED = ["AOPerModuleConfig", "FqnToConfig", "ModuleFqnToConfig"]
# plain torchao fails on them here, untied or not (CUDA only, an extra package, a
# calibration step, or not a quantize_ config)
NOT_HERE = [
    "Float8DynamicActivationFloat8WeightConfig",
    "Float8DynamicActivationInt4WeightConfig",
    "Float8StaticActivationFloat8WeightConfig",
    "Int8StaticActivationInt8WeightConfig",
    "intx_quantization_aware_training",
]


def _stack(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)
    )


def _pair():
    tied = _stack()
    untied = copy.deepcopy(tied)
    untied[2].load_state_dict(untied[0].state_dict())
    tying.Plan([tying.share("2", like="0")]).apply(tied)
    return tied, untied


def test_every_torchao_config_is_swept():
    configs = {
        n
        for n in dir(tq)
        if inspect.isclass(getattr(tq, n)) and issubclass(getattr(tq, n), AOBaseConfig)
    }
    assert configs == set(RUNS_HERE) | set(REFUSED) | set(NOT_HERE)


@pytest.mark.parametrize("name", RUNS_HERE)
def test_a_whole_tie_is_quantized_once_as_torchao_quantizes_the_untied_copy(name):
    tied, untied = _pair()
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = quantize_(tied, getattr(tq, name)())
        tq.quantize_(untied, getattr(tq, name)())
    assert ours[2].weight is ours[0].weight  # one (quantized) tensor, both uses
    assert type(ours[0].weight) is type(untied[0].weight)
    assert torch.equal(ours(x), untied(x))
    assert tying.verify(ours) == 2


@pytest.mark.parametrize("name", REFUSED)
def test_a_per_module_config_is_a_type_error_naming_the_way_that_works(name):
    tied, untied = _pair()
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in tied.state_dict().items()}
    config = getattr(tq, name)({"0": tq.Int8WeightOnlyConfig(), "2": tq.Int8WeightOnlyConfig()})
    with pytest.raises(TypeError, match=r"cannot be applied here.*once per config, with filter_fn"):
        quantize_(tied, config)
    after = tied.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert type(tied[0].weight) is nn.Parameter
    # the way the message names equals torchao's per-module config on the untied copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = quantize_(
            tied, tq.Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in {"0", "2"}
        )
        tq.quantize_(untied, config, filter_fn=None)
    assert type(untied[4].weight) is nn.Parameter and type(ours[4].weight) is nn.Parameter
    assert ours[2].weight is ours[0].weight
    assert torch.equal(ours(x), untied(x))
