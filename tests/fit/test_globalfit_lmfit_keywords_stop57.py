"""GlobalFit(weights=...) names sigma, as Dataset(weights=...) does (stop 57).

docs/coming-from.md says lmfit's ``weights`` is refused with "the third tuple item is
σ"; Dataset says so, but GlobalFit(..., weights=w) (where lmfit users pass it, as to
Model.fit) was Python's bare "unexpected keyword argument 'weights'".
"""

import numpy as np
import pytest

import tying.fit


def _fit(**kw):
    x = np.linspace(0, 1, 5)
    return tying.fit.GlobalFit(
        lambda x, a: a * x, [(x, 2 * x)], shared=["a"], init={"a": 1.0}, **kw
    )


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("weights", r"sigma = 1 / weights"),
        ("max_nfev", r"max_iter="),
        ("method", r"solver="),
        ("nan_policy", r"drop those points"),
    ],
)
def test_lmfit_keywords_name_ours(key, says):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{key}': .*{says}"):
        _fit(**{key: 1})


def test_other_unknown_keyword_is_the_plain_type_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'colour'$"):
        _fit(colour=1)
