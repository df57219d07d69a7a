from __future__ import annotations

import numpy as np
import pytest

from tying.fit.datasets import Dataset, as_dataset, stack


def test_every_form_is_accepted_and_padded():
    x = np.arange(3.0)
    data = stack(
        [
            (x, x),
            (x[:2], x[:2], 0.5),
            (x, x, {"inst": "a"}),
            (x, x, np.full(3, 2.0), {"inst": "b"}),
            {"x": x, "y": x, "name": "dict"},
            Dataset(x, x, metadata={"T": 3}, name="obj"),
        ]
    )
    assert data.names == ["dataset 0", "dataset 1", "dataset 2", "dataset 3", "dict", "obj"]
    assert data.lengths.tolist() == [3, 2, 3, 3, 3, 3]
    assert data.metadata[2] == {"inst": "a"} and data.metadata[3] == {"inst": "b"}
    assert data.weight[1].tolist() == [2.0, 2.0, 0.0]  # 1/sigma, 0 where padded
    assert data.weight[3].tolist() == [0.5, 0.5, 0.5]
    assert data.mask[1].tolist() == [True, True, False]
    assert data.x_padded[1].tolist() == [0.0, 1.0, 1.0]  # padded with the last x
    assert data.n_points == 17 and not data.equal_lengths


def test_nan_is_named_with_its_data_set_and_point():
    y = np.array([1.0, 2.0, np.inf, np.nan])
    with pytest.raises(
        ValueError,
        match=r"dataset 'run7' \(index 1\): y has 2 NaN/inf value\(s\), the first at point 2",
    ):
        stack([(np.arange(4.0), np.ones(4)), Dataset(np.arange(4.0), y, name="run7")])
    with pytest.raises(ValueError, match=r"dataset 0.*: x has 1 NaN/inf"):
        stack([(np.array([0.0, np.nan]), np.ones(2))])


def test_bad_sigma_lengths_and_names():
    x = np.arange(3.0)
    with pytest.raises(ValueError, match=r"sigma must be > 0, got 0.0 at point 1"):
        stack([(x, x, np.array([1.0, 0.0, 1.0]))])
    with pytest.raises(ValueError, match=r"sigma has shape \(2,\), expected \(3,\)"):
        stack([(x, x, np.ones(2))])
    with pytest.raises(ValueError, match=r"x has 2 point\(s\) along its first axis but y has 3"):
        stack([(x[:2], x)])
    with pytest.raises(ValueError, match=r"two data sets are named 'a'"):
        stack([Dataset(x, x, name="a"), Dataset(x, x, name="a")])
    with pytest.raises(ValueError, match=r"datasets is empty"):
        stack([])
    with pytest.raises(ValueError, match=r"has no points"):
        stack([(np.zeros(0), np.zeros(0))])


def test_bad_forms_are_type_errors():
    with pytest.raises(TypeError, match=r"wrap a single data set in a list"):
        stack(Dataset([0.0], [1.0]))
    with pytest.raises(TypeError, match=r"dataset 0: a dict data set needs keys 'x' and 'y'"):
        as_dataset({"x": [1.0]}, 0)
    with pytest.raises(TypeError, match=r"dataset 3: expected a tying.fit.Dataset"):
        as_dataset([1.0, 2.0], 3)
    with pytest.raises(TypeError, match=r"metadata must be a dict"):
        stack([Dataset([0.0], [1.0], metadata=["inst"])])


def test_two_dimensional_x_disables_padding_of_x():
    data = stack([(np.zeros((4, 2)), np.ones(4)), (np.zeros((3, 2)), np.ones(3))])
    assert data.x_padded is None and data.lengths.tolist() == [4, 3]


def test_a_masked_array_with_masked_points_is_refused_not_read_under_its_mask():
    # np.asarray(masked, dtype=float) reads the data under the mask: the fit used the very
    # points the user had masked out, with no error (stop 18)
    x = np.arange(4.0)
    y = np.ma.masked_array([1.0, 2.0, 99.0, 4.0], mask=[False, False, True, False])
    with pytest.raises(
        ValueError, match=r"y is a masked array with 1 masked value\(s\), the first at point 2"
    ):
        stack([(x, y)])
    with pytest.raises(ValueError, match=r"sigma is a masked array"):
        stack([(x, y.data, np.ma.masked_array(np.ones(4), mask=[1, 0, 0, 0]))])
    # a masked scalar σ (it raised a bare "len() of unsized object" TypeError)
    with pytest.raises(ValueError, match=r"sigma is a masked array with 1 masked value"):
        stack([(x, y.data, np.ma.masked_array(1.0, mask=True))])
    # a masked array with nothing masked is its data
    data = stack([(np.ma.masked_array(x), np.ma.masked_array(y.data))])
    assert data.y[0].tolist() == [1.0, 2.0, 99.0, 4.0]


@pytest.mark.parametrize(
    "label,value,match",
    [
        ("y", np.array([1, 2, 3]) + 1j, r"y is complex \(the imaginary part would be dropped\)"),
        ("x", np.arange(3) + 0.5j, r"x is complex"),
        ("y", np.array([True, False, True]), r"y is boolean"),
        ("sigma", True, r"sigma is boolean"),
        ("y", np.array(["1.0", "2.0", "3.0"]), r"y is not numeric \(<U3\)"),
    ],
)
def test_values_a_cast_would_change_are_refused_by_name(label, value, match):
    ds = {"x": np.arange(3.0), "y": np.ones(3), "name": "run-2"}
    ds[label] = value
    with pytest.raises(ValueError, match=r"dataset 'run-2' \(index 0\): " + match):
        stack([ds])


def test_a_name_that_is_not_a_str_is_refused():
    # results read params(3) as the data set at index 3: a data set *named* 3 (a run
    # number) was silently swapped for another one (stop 31 review)
    x = np.arange(3.0)
    with pytest.raises(
        TypeError, match=r"dataset 1: name must be a str, got 3 \(int\); use name='3'"
    ):
        stack([Dataset(x, x, name="a"), Dataset(x, x, name=3)])
    with pytest.raises(TypeError, match="name must be a str"):
        stack([{"x": x, "y": x, "name": np.int64(7)}])


@pytest.mark.parametrize(
    "label,value,match",
    [
        # object arrays (a pandas column with a stray entry): cast element by element,
        # strings were parsed, booleans read as 0/1, a complex raised a bare TypeError
        ("y", np.array(["1", "2", "3"], dtype=object), r"y holds '1' \(str\) at point 0"),
        ("y", np.array([1.0, True, 2.0], dtype=object), r"y holds True \(bool\) at point 1"),
        ("sigma", np.array([1.0, 2 + 1j, 1.0], dtype=object), r"sigma holds \(2\+1j\)"),
        ("x", np.array([0.0, np.ones(2), 2.0], dtype=object), r"x holds array\(\[1\., 1\.\]\)"),
        # dates and durations were cast in their dtype's own unit (days, or pandas' ns)
        ("x", np.array(["2024-01-01", "2024-01-02", "2024-01-05"], dtype="datetime64[D]"),
         r"x is datetime64\[D\] \(dates or durations\).*np\.timedelta64\(1, 's'\)"),
        ("x", np.array([0, 60, 120], dtype="timedelta64[s]"), r"x is timedelta64\[s\]"),
    ],
)  # fmt: skip
def test_object_arrays_and_dates_are_refused_by_point_not_cast(label, value, match):
    ds = {"x": np.arange(3.0), "y": np.ones(3), "name": "run-2"}
    ds[label] = value
    with pytest.raises(ValueError, match=r"dataset 'run-2' \(index 0\): " + match):
        stack([ds])


def test_object_arrays_of_real_numbers_are_still_read():
    import decimal
    import fractions

    y = np.array([1, 2.5, np.float32(3.0), fractions.Fraction(1, 4)], dtype=object)
    x = np.array([True, False, True, True], dtype=object)  # a boolean x stays allowed
    data = stack([(x, y, decimal.Decimal("0.5"))])
    assert data.y[0].tolist() == [1.0, 2.5, 3.0, 0.25]
    assert data.xs[0].tolist() == [1.0, 0.0, 1.0, 1.0] and data.weight[0].tolist() == [2.0] * 4
    with pytest.raises(ValueError, match=r"y has 1 NaN/inf value\(s\), the first at point 1"):
        stack([(np.arange(3.0), np.array([1.0, None, 2.0], dtype=object))])


def test_a_dict_with_lmfit_weights_is_told_that_sigma_is_one_over_weights():
    # lmfit's weights multiply the residual (1/sigma): read as sigma they would invert each
    # point's weight, so the key is refused, now with the conversion; a dict with a key
    # that is not a str raised sorted()'s bare "'<' not supported" naming nothing
    x = np.arange(3.0)
    with pytest.raises(TypeError, match=r"got keys \['weights', 'x', 'y'\]; lmfit's 'weights' "
                                        r"multiply the residual, so pass 'sigma': 1 / weights"):  # fmt: skip
        stack([{"x": x, "y": x, "weights": 2 * np.ones(3)}])
    with pytest.raises(TypeError, match=r"dataset 0: a dict data set needs keys .* got keys "
                                        r"\[0, 'x', 'y'\]$"):  # fmt: skip
        stack([{"x": x, "y": x, 0: x}])


def test_a_two_dimensional_y_is_told_to_pass_one_data_set_per_row_not_to_flatten():
    # lmfit's multi-data-set example keeps its five data sets as rows of one (5, 151)
    # array; the advice was "flatten it", which makes one data set of 755 points
    x = np.linspace(-1, 2, 151)
    with pytest.raises(ValueError, match=r"got shape \(5, 151\); for several data sets in the "
                                         r"rows of one array pass one data set per row: "
                                         r"\[\(x, row\) for row in y\]"):  # fmt: skip
        stack([(x, np.ones((5, 151)))])
    with pytest.raises(ValueError, match=r"got shape \(151, 1\); flatten the column: y.ravel\(\)"):
        stack([(x, np.ones((151, 1)))])


@pytest.mark.parametrize("tiny", [1e-309, 1e-320, 5e-324])
def test_a_sigma_whose_weight_overflows_is_refused_by_point(tiny):
    # stop 35: a subnormal sigma gave an inf weight (and a RuntimeWarning from the divide),
    # then NaN residuals where y = 0 and an error blaming "underflow" or the start values
    x = np.arange(5.0)
    sigma = np.ones(5)
    sigma[3] = tiny
    with pytest.raises(ValueError, match=r"dataset 'dataset 0' \(index 0\): sigma is .* at "
                                         r"point 3, so its weight 1/sigma overflows float64; "
                                         r"sigma is the standard deviation of y"):  # fmt: skip
        stack([(x, np.where(x == 3, 0.0, x), sigma)])


def test_x_is_stored_as_a_read_only_copy():
    # stop 35: the caller's float x was stored (and passed to model_fn) as is
    x = np.linspace(0, 1, 4)
    data = stack([(x, x), (x[:3], x[:3])])
    assert data.xs[0] is not x and not np.shares_memory(data.xs[0], x)
    with pytest.raises(ValueError, match="read-only"):
        data.xs[0][0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        data.x_padded[0, 0] = 5.0
    assert x[0] == 0.0
