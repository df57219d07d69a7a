"""hashed-recsys at quick size (issue 18), and its AUC against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest

from tying.experiments import hashed_recsys as mod

from .helpers_spatial import check_result


def test_auc_matches_scikit_learn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    score = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert mod.auc(score, y.astype(float)) == pytest.approx(metrics.roc_auc_score(y, score))


def test_auc_of_one_class_is_refused_not_nan():
    with pytest.raises(ValueError, match="both classes, got 0 positives and 4 negatives"):
        mod.auc(np.arange(4.0), np.zeros(4))


def test_zipf_ids_are_skewed_scattered_and_in_range():
    rng = np.random.default_rng(1)
    ids = mod._zipf_ids(rng, 200_000, 50_000, 1.2)
    assert ids.min() >= 0 and ids.max() < 50_000
    counts = np.sort(np.bincount(ids, minlength=50_000))[::-1]
    assert counts[0] > 50 * np.median(counts[counts > 0])  # a heavy head
    top = np.argsort(np.bincount(ids, minlength=50_000))[::-1][:10]
    assert top.max() > 1000  # popular IDs are not simply 0, 1, 2, ...


def test_hashed_recsys_quick():
    r = mod.hashed_recsys("quick", 0)
    check_result(r)
    m = r.measured
    assert m["dense AUC"] < m["Bayes AUC"]
    assert m["block-hashed AUC at 1/100 memory"] > 0.6  # learned something, not chance
    assert r.passed, r.key_figure


@pytest.mark.slow
def test_report_size():
    assert mod.hashed_recsys("report", 0).passed
