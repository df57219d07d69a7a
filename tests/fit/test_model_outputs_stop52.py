"""What ``model_fn`` returns, checked on every call, and the plot of a fit (stop 52).

Before this stop the shape of the all-data-sets call was checked at the start only (a
shape that changed mid-fit raised NumPy's "boolean index did not match", naming
nothing; under autograd a ``(1, n)`` output was broadcast into every data set's rows of
the Jacobian, without a word); a masked array was read under its mask (``np.ma.log``
keeps its input there, so the fit used ``b·x`` as the model's log); booleans were read
as 0/1. ``FitResult.plot`` drew the model line in storage order (a zigzag through
unsorted x), left the axes unlabelled, and one Axes raised "cannot unpack".
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tying.fit import GlobalFit, ModelError

X1, X2 = np.linspace(0.0, 3.0, 30), np.linspace(0.0, 2.0, 20)


def _data(seed: int = 3):
    rng = np.random.default_rng(seed)
    return [
        (X1, 2.0 * np.exp(-1.3 * X1) + rng.normal(0, 0.01, 30), 0.01),
        (X2, 3.0 * np.exp(-1.3 * X2) + rng.normal(0, 0.01, 20), 0.01),
    ]


def _fit(model_fn, **kwargs):
    return GlobalFit(
        model_fn, _data(), shared=["k"], local=["a"], init={"a": 1.0, "k": 0.5}, **kwargs
    )


@pytest.mark.parametrize("short", ["one point short", "a scalar"])
def test_a_batched_output_whose_shape_changes_mid_fit_is_named(short):
    calls = {"n": 0}

    def model(x, a, k):
        calls["n"] += 1
        out = a * np.exp(-k * x)
        if calls["n"] <= 5:  # the start and the checks before the fit see the right shape
            return out
        return out[..., :-1] if short == "one point short" else np.float64(out.sum())

    got = re.escape("(2, 29)" if short == "one point short" else "()")
    with pytest.raises(
        ValueError,
        match=rf"model_fn returned shape {got} from the call on all data sets at once "
        r"\(x of shape \(2, 30\)\), expected \(2, 30\).*or pass vectorized=False",
    ):
        _fit(model).run()


def test_a_torch_output_broadcast_into_the_jacobian_is_refused():
    torch = pytest.importorskip("torch")

    def model(x, a, k):
        out = a * torch.exp(-k * x)
        if torch.is_grad_enabled() and k.requires_grad and out.ndim == 2:
            return out.mean(0, keepdim=True)  # (1, n_max): jac[:] = ... broadcast it
        return out

    # the complex step is refused (a comparison of tensors): autograd's columns are used
    with pytest.raises(
        ValueError,
        match=r"model_fn returned shape \(1, 30\) from the call on all data sets at once "
        r"\(x of shape \(2, 30\)\), expected \(2, 30\)",
    ):
        _fit(model, backend="torch").run()


def test_a_masked_model_value_is_undefined_not_the_value_under_the_mask():
    rng = np.random.default_rng(11)
    x = np.linspace(-1.0, 3.0, 30)
    y = np.log(np.abs(1.5 * x) + 0.1) + rng.normal(0, 0.01, 30)

    def model(x, b, c):
        return np.ma.log(b * x + c)  # masked where b·x + c <= 0: points 0 to 7 at the start

    # np.asarray read b·x + c under the mask (-0.5 at point 0), as if it were the model
    with pytest.raises(
        ValueError,
        match=r"model_fn returned NaN/inf for dataset 'dataset 0' \(index 0\) at the "
        r"starting values \(first at point 0\)",
    ):
        GlobalFit(model, [(x, y, 0.01)], shared=["b", "c"], init={"b": 1.0, "c": 0.5}).run()
    # where the mask is empty it is an array like any other (lmfit's answer, to 1e-8)
    res = GlobalFit(
        model, [(x[8:], y[8:], 0.01)], shared=["b", "c"], init={"b": 1.0, "c": 0.5}
    ).run()
    plain = GlobalFit(
        lambda x, b, c: np.log(b * x + c),
        [(x[8:], y[8:], 0.01)],
        shared=["b", "c"],
        init={"b": 1.0, "c": 0.5},
    ).run()
    assert res.success and res.chi2 == pytest.approx(plain.chi2, rel=1e-8)


def test_a_masked_value_met_mid_fit_is_a_wall_not_a_model_value():
    # the log's argument goes <= 0 at x = -1 only past c < b: masked points appear mid-fit
    rng = np.random.default_rng(12)
    x = np.linspace(-1.0, 3.0, 30)
    y = np.log(2.0 * x + 2.5) + rng.normal(0, 0.01, 30)
    res = GlobalFit(
        lambda x, b, c: np.ma.log(b * x + c),
        [(x, y, 0.01)],
        shared=["b", "c"],
        init={"b": 1.0, "c": 5.0},
    ).run()
    assert res.values["b"] == pytest.approx(2.0, abs=0.05)
    assert res.values["c"] == pytest.approx(2.5, abs=0.05)
    assert np.all(np.isfinite(res.best_fit(0)))


def test_a_boolean_model_output_is_refused():
    with pytest.raises(
        ValueError,
        match=r"model_fn returned bool values for dataset 'dataset 0' \(index 0\), expected "
        r"real numbers.*np.where\(cond, a, b\)",
    ):
        _fit(lambda x, a, k: a * np.exp(-k * x) > 1).run()


def test_a_model_raising_mid_fit_is_still_a_model_error():
    # the shape check sits after the call: a model that raises is named as before
    calls = {"n": 0}

    def model(x, a, k):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("boom")
        return a * np.exp(-k * x)

    with pytest.raises(ModelError, match=r"model_fn raised RuntimeError: boom during the fit"):
        _fit(model).run()


def test_the_wall_note_names_the_data_set_and_point_where_the_model_was_nan():
    # sqrt(b - x) is NaN past x = b: the note named only the parameters, not where
    x0, x1 = np.linspace(0, 1, 10), np.linspace(0, 4, 30)

    def model(x, a, b):
        return a * x + np.sqrt(b - x)

    rng = np.random.default_rng(0)
    data = [
        (x0, model(x0, 1.0, 4.05) + rng.normal(0, 0.01, 10), 0.01),
        (x1, model(x1, 2.0, 4.05) + rng.normal(0, 0.01, 30), 0.01),
    ]
    for solver in ("lm", "trf"):
        res = GlobalFit(
            model, data, shared=["b"], local=["a"], init={"a": 0.0, "b": 10.0}, solver=solver
        ).run()
        assert res.success and res.values["b"] == pytest.approx(4.05, abs=0.05)
        found = re.search(
            r"first at b=([-0-9.e+]+), .*on dataset '(dataset \d)' \(index (\d)\), point (\d+)\)",
            res.message,
        )
        assert found, res.message
        b, name, index, point = float(found[1]), found[2], int(found[3]), int(found[4])
        # the first NaN in row-major order at that b: the first x past b, data set 0 first
        x = (x0, x1)[index]
        assert (name, index) == (f"dataset {index}", 0 if b < x0[-1] else 1)
        assert point == int(np.argmax(x > b)) and x[point] > b
        assert point == 0 or b >= x[point - 1]


# -- the plot -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsorted():
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 3, 25)  # stored in random order
    y = 2 * np.exp(-1.3 * x) + rng.normal(0, 0.01, 25)
    return GlobalFit(
        lambda x, a, k: a * np.exp(-k * (x if x.ndim == 1 else x[:, 0])),
        [(x, y, 0.01), (np.column_stack([x, x]), y, 0.01)],
        shared=["k"],
        local=["a"],
        init={"a": 1.0, "k": 1.0},
        vectorized=False,
    ).run()


def test_the_plot_draws_the_model_along_x_and_labels_its_axes(unsorted):
    res = unsorted
    top, bottom = res.plot(0).axes
    (line,) = [ln for ln in top.get_lines() if ln.get_label() == "global fit"]
    xs, ys = line.get_xdata(), line.get_ydata()
    assert np.all(np.diff(xs) >= 0)  # a line along x, not a zigzag in storage order
    x = res._data.xs[0]
    order = np.argsort(x)
    np.testing.assert_array_equal(xs, x[order])
    np.testing.assert_array_equal(ys, res.best_fit(0)[order])
    (points,) = bottom.get_lines()[:1]  # the residual panel: (y - model)/σ at each x (lmfit's sign)
    np.testing.assert_array_equal(points.get_xdata(), x)
    np.testing.assert_allclose(
        points.get_ydata(), (res._data.y[0, :25] - res.best_fit(0)) / 0.01, rtol=1e-12
    )
    assert (top.get_ylabel(), bottom.get_xlabel(), bottom.get_ylabel()) == (
        "y",
        "x",
        "(y - model)/σ",
    )
    # a data set with an x that is not 1-D is drawn by point index, and says so
    assert res.plot(1).axes[1].get_xlabel() == "point index (x is not 1-D)"


def test_the_plot_asks_for_a_pair_of_axes(unsorted):
    from matplotlib.figure import Figure

    fig = Figure()
    one = fig.subplots()
    with pytest.raises(TypeError, match=r"plot\(ax=...\) takes a pair of matplotlib Axes"):
        unsorted.plot(0, ax=one)
    pair = Figure().subplots(2, 1)
    assert unsorted.plot(0, ax=pair) is pair[0].figure
