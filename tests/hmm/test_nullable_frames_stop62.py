"""X as a pandas DataFrame of nullable dtypes (Float64, Int64) is read as numbers (stop 62).

NumPy reads such a frame as Python objects, so it was refused as "got dtype object",
while one such column (a Series) scored, and hmmlearn reads both. A missing value
(pd.NA) is NaN and refused by position; an object column holding pd.NA is named as a
missing value, not told to recode it as a label.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM

pd = pytest.importorskip("pandas")

X = np.array([[0.5, -1.0], [0.25, 2.0], [1.5, 0.0], [-0.5, 1.0]])


def _gauss():
    return GaussianHMM.from_params(
        [0.6, 0.4], [[0.7, 0.3], [0.2, 0.8]], [[0.0, 0.0], [1.0, 1.0]], [[1.0, 2.0], [0.5, 1.0]]
    )


@pytest.mark.parametrize(
    "dtypes", ["Float64", "Float32", {"a": "Float64"}, {"a": "Float64", "b": "Int64"}]
)
def test_a_nullable_float_frame_scores_as_its_numbers(dtypes):
    m = _gauss()
    df = pd.DataFrame(X, columns=["a", "b"])
    if dtypes == {"a": "Float64", "b": "Int64"}:
        df["b"] = df["b"].round()
    frame = df.astype(dtypes)
    plain = frame.to_numpy(dtype=float)
    assert m.score(frame, [3, 1]) == m.score(plain, [3, 1])
    np.testing.assert_array_equal(m.predict_proba(frame), m.predict_proba(plain))
    fitted = GaussianHMM(2, n_iter=3, tol=-np.inf, random_state=0).fit(frame)
    again = GaussianHMM(2, n_iter=3, tol=-np.inf, random_state=0).fit(plain)
    np.testing.assert_array_equal(fitted.means_, again.means_)


def test_a_nullable_int_frame_of_symbols_scores_as_its_ints():
    c = CategoricalHMM.from_params([1.0], [[1.0]], [[0.25, 0.75]])
    frame = pd.DataFrame({"s": [1, 0, 1]}, dtype="Int64")
    assert c.score(frame) == c.score([[1], [0], [1]])
    g = GMMHMM.from_params([1.0], [[1.0]], [[1.0]], [[[0.0, 0.0]]], [[[1.0, 1.0]]])
    assert g.score(pd.DataFrame(X).astype("Float64")) == g.score(X)


def test_a_missing_value_in_a_nullable_frame_is_named_by_position():
    frame = pd.DataFrame(X, columns=["a", "b"]).astype("Float64")
    frame.iloc[2, 1] = pd.NA
    with pytest.raises(
        ValueError, match=r"X contains nan at sequence 1, position 0 \(row 2 of X\)"
    ):
        _gauss().score(frame, [2, 2])


def test_pd_na_in_an_object_column_is_named_as_missing_not_as_a_label():
    frame = pd.DataFrame(X).astype(object)
    frame.iloc[1, 0] = pd.NA
    with pytest.raises(
        ValueError,
        match=r"X\[1\] holds <NA>, a missing value: remove those rows \(with lengths to match\) or impute them first$",
    ):
        _gauss().score(frame)


def test_text_and_object_frames_keep_their_refusal():
    m = _gauss()
    for frame in (pd.DataFrame(X).astype(object), pd.DataFrame(X).astype(str)):
        with pytest.raises(ValueError, match=r"got dtype object"):
            m.score(frame)


@pytest.mark.parametrize("gap", [pd.NA, None, np.nan])
@pytest.mark.parametrize("dtype", ["string", object])
def test_a_missing_value_after_labels_is_named_as_missing_not_told_np_unique(gap, dtype):
    # np.unique (the label advice) fails on a column of labels holding a missing value:
    # "boolean value of NA is ambiguous" / "'<' not supported"
    c = CategoricalHMM.from_params([1.0], [[1.0]], [[0.25, 0.75]])
    frame = pd.DataFrame({"s": ["A", "C", gap, "A"]}, dtype=dtype)
    with pytest.raises(TypeError):
        np.unique(frame, return_inverse=True)
    with pytest.raises(ValueError, match=r"X\[2\] holds .*, a missing value: remove those rows"):
        c.score(frame)
    g = _gauss()
    frame2 = pd.DataFrame({"a": ["x", "y", "z"], "b": ["u", gap, "w"]}, dtype=dtype)
    with pytest.raises(ValueError, match=r"X\[1\] holds .*, a missing value"):
        g.score(frame2)
