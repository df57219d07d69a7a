"""``Dataset`` names a keyword it does not take, and the one to use (stop 55).

Before stop 55 ``Dataset(x, y, weights=w)``, lmfit's keyword, raised Python's bare
"Dataset.__init__() got an unexpected keyword argument 'weights'", naming no fix; and
``Dataset(x, y, {"T": 300})`` (metadata third, as the tuple form allows) was refused
as "sigma holds {'T': 300} (dict) at point 0 ... convert sigma to a float array".
"""

import numpy as np
import pytest

from tying.fit import Dataset, GlobalFit

X = np.linspace(0, 1, 10)


@pytest.mark.parametrize("key", ["weights", "weight", "w"])
def test_lmfit_weights_keyword_says_sigma_is_one_over_weights(key):
    with pytest.raises(
        TypeError,
        match=rf"Dataset\(\) got an unexpected keyword argument '{key}': lmfit's weights "
        r"multiply the residual \(weights = 1/sigma\).*pass sigma=1 / weights",
    ):
        Dataset(X, 2 * X, **{key: np.ones(10)})


@pytest.mark.parametrize(
    ("key", "meant"),
    [("yerr", "sigma"), ("sigmas", "sigma"), ("meta", "metadata"), ("label", "name")],
)
def test_another_tools_keyword_is_named_with_ours(key, meant):
    with pytest.raises(TypeError, match=rf"'{key}': Dataset takes x, y, sigma, metadata, "
                       rf"name; did you mean {meant}=\?"):  # fmt: skip
        Dataset(X, 2 * X, **{key: 1.0})


def test_metadata_given_third_is_refused_with_the_keyword():
    with pytest.raises(TypeError, match=r"third argument is sigma, got a dict \{'T': 300\}; "
                       r"pass metadata by name: Dataset\(x, y, metadata=\{'T': 300\}\)"):  # fmt: skip
        Dataset(X, 2 * X, {"T": 300})


def test_the_keywords_it_takes_fit_as_before():
    # the weights ported as sigma = 1/w: the fit of lmfit's weights=w, to rounding
    w = np.full(10, 4.0)
    ds = Dataset(X, 2 * X + 1, sigma=1 / w, metadata=None, name="run")
    assert ds.metadata == {} and ds.name == "run"
    res = GlobalFit(lambda x, a, b: a * x + b, [ds], shared=["a", "b"],
                    init={"a": 0.0, "b": 0.0}).run()  # fmt: skip
    assert res.values["a"] == pytest.approx(2.0, abs=1e-9)
    assert res.dataset_names == ["run"]
