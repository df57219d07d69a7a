"""Review of stop 59 (fit advice, td.ddp / plain-DDP tie record): defects the commits missed.

- fixed={'base': [array, array]} (a per-point curve, refused with the column_stack advice
  before) now fails inside the new ``None in value`` test with NumPy's "truth value of an
  array ... is ambiguous";
- fit.run(max_nfev=10) advised "set it on the built fit (fit.<keyword> = value)": followed
  as fit.max_nfev = 10 the fit ran with the default budget, no error;
- fit.fit(lmfit_params) with a held parameter (vary=False): the advice followed as written
  (init/bounds for every name, held ones as fit.fixed) is refused (two roles / bounds of a
  fixed name);
- a model whose REAL child is named ``module`` (a user wrapper holding a tied stack): the
  depth-2 record was not read through plain DDP's get_model_state_dict, td.ddp's
  get_model_state_dict or set_model_state_dict into td.ddp: depth 2 loaded into depth 3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.nn.parallel import DistributedDataParallel

import tying
import tying.distributed as td
from tying.fit import GlobalFit

_X = np.linspace(0, 1, 8)
_DS = [(_X, 2 * _X + 1), (_X, 2 * _X + 3)]


def _line(x, a=1.0, b=0.0):
    return a * x + b


def test_fixed_array_per_dataset_keeps_its_advice():
    def curve(x, a=1.0, base=0.0):
        return a * x + base

    fit = GlobalFit(curve, _DS, shared=["a"], fixed={"base": [np.zeros(8), np.ones(8)]})
    with pytest.raises(ValueError, match=r"np\.column_stack"):
        fit.run()


def test_lmfit_keyword_advice_names_the_attribute_that_is_read():
    fit = GlobalFit(_line, _DS, shared=["a"], local=["b"])
    with pytest.raises(TypeError, match=r"fit\.max_iter = ") as e:
        fit.run(max_nfev=10)
    assert "fit.<keyword>" not in str(e.value)
    with pytest.raises(TypeError, match=r"fit\.solver = 'trf'"):
        fit.run(method="trf")
    with pytest.raises(TypeError, match=r"\(model_fn, datasets, shared, .*max_iter\)"):
        fit.run(verbose=True)


def test_lmfit_parameters_advice_with_a_held_parameter_works_as_written():
    class Param:  # lmfit.Parameter's fields the advice reads (lmfit is an optional extra)
        def __init__(self, value, vary=True):
            self.value, self.vary, self.min, self.max = value, vary, -np.inf, np.inf

    class Parameters(dict):
        def valuesdict(self):
            return {n: p.value for n, p in self.items()}

    params = Parameters(a=Param(1.5), b=Param(1.0, vary=False))
    fit = GlobalFit(_line, [(_X, 2 * _X + 1)] * 2, shared=["a"])
    with pytest.raises(TypeError, match=r"if p\.vary\}.*if not p\.vary\}") as e:
        fit.fit(params)
    # the advice, followed as written
    fit.init = {n: p.value for n, p in params.items() if p.vary}
    fit.bounds = {n: (p.min, p.max) for n, p in params.items() if p.vary}
    fit.fixed = {n: p.value for n, p in params.items() if not p.vary}
    assert "a held name leaves shared/per_group/local" in str(e.value)
    assert fit.run().values["a"] == pytest.approx(2.0)


class _Wrap(nn.Module):  # a user's own wrapper: a REAL child named `module`
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.module = inner


def _wrapped_stack(depth: int, seed: int = 0) -> _Wrap:
    torch.manual_seed(seed)
    m = nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)])
    tying.Plan([tying.share("*", like="0")]).apply(m)
    return _Wrap(m)


_REFUSED = r"load_state_dict into Sequential at 'module'.*ties 2 slot\(s\)"


def test_a_real_child_named_module_keeps_its_record_through_ddp(group):
    for saved in (
        get_model_state_dict(DistributedDataParallel(_wrapped_stack(2))),
        get_model_state_dict(td.ddp(_wrapped_stack(2))),
    ):
        deeper = _wrapped_stack(3, seed=1)
        with pytest.raises(tying.TieError, match=_REFUSED):
            deeper.load_state_dict(saved)
        same = _wrapped_stack(2, seed=1)
        same.load_state_dict(saved)  # the same ties load
        assert torch.equal(same.module[1].weight, _wrapped_stack(2).module[0].weight)
    with pytest.raises(tying.TieError, match=_REFUSED):
        set_model_state_dict(td.ddp(_wrapped_stack(3, 1)), get_model_state_dict(_wrapped_stack(2)))
    set_model_state_dict(td.ddp(_wrapped_stack(2, 1)), get_model_state_dict(_wrapped_stack(2)))
    td.ddp(_wrapped_stack(2, 1)).load_state_dict(td.ddp(_wrapped_stack(2)).state_dict())
