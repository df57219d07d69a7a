"""Stop 51: every plot in a figure says what its axes are, and a figure's numbers are the run's.

A reviewer reading the report found plots with an unlabelled axis (B9's bar chart of
parameters and ranks, C1's distance curve, B2's error bars, C7's four panels), a
C7 title that typed "41 fast weights" in instead of reading the model's count, and a D5
legend whose RMSE (one biology) sat beside a table of means over all of them with nothing
to say so. ``unlabelled_axes`` is the rule: an axes that plots data (lines, points, bars)
names both axes, unless its ticks are category names or it shares the axis with a panel
that names it; a picture (``imshow``) needs only a title; every plot has a title or its
figure a suptitle.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tying.experiments import load_all
from tying.experiments.registry import get

_NUMBER = re.compile(r"[−\-+0-9.,e$^{}\\mathdefault×10 ]*")


def _numeric(ticklabels) -> bool:
    return all(_NUMBER.fullmatch(t.get_text()) for t in ticklabels if t.get_text())


def unlabelled_axes(fig) -> list[str]:
    """What is missing, per axes with data: ``["[1] no ylabel", ...]`` (empty when none)."""
    sup = fig._suptitle.get_text() if fig._suptitle else ""
    missing = []
    for k, ax in enumerate(fig.axes):
        if ax.get_label() == "<colorbar>" or not (
            ax.lines or ax.collections or ax.patches or ax.images
        ):
            continue
        if not (ax.get_title() or sup):
            missing.append(f"[{k}] no title")
        if ax.images:  # a picture: its title says what it shows
            continue
        # a shared axis is labelled once (the panel beside or below says it)
        xs = ax.get_shared_x_axes().get_siblings(ax)
        ys = ax.get_shared_y_axes().get_siblings(ax)
        if not any(a.get_xlabel() for a in xs) and _numeric(ax.get_xticklabels()):
            missing.append(f"[{k}] no xlabel ({ax.get_title()!r})")
        if not any(a.get_ylabel() for a in ys) and _numeric(ax.get_yticklabels()):
            missing.append(f"[{k}] no ylabel ({ax.get_title()!r})")
    return missing


def test_the_rule_finds_what_it_names():
    from tying.experiments.common import new_figure

    fig, (a, b, c) = new_figure(3)
    a.plot([1, 2], [3, 4])
    b.bar([0, 1], [1, 2])
    b.set_xticks([0, 1], ["MHA", "MQA"])  # category names label the x axis
    b.set_ylabel("count")
    c.imshow(np.zeros((2, 2)))
    assert unlabelled_axes(fig) == [
        "[0] no title",
        "[0] no xlabel ('')",
        "[0] no ylabel ('')",
        "[1] no title",
        "[2] no title",
    ]
    fig.suptitle("all three")
    a.set_xlabel("x")
    assert unlabelled_axes(fig) == ["[0] no ylabel ('')"]


@pytest.mark.parametrize(
    "exp_id",
    # the cheapest figures (well under a second each), three of them fixed at stop 51
    ["conv-is-tied-lc", "bptt-sum", "c4-equivariance", "cnn-as-pgm", "kv-sharing"],
)
def test_every_plot_of_the_cheap_experiments_is_labelled(exp_id):
    load_all()
    result = get(exp_id).fn("quick", 0)
    assert result.figures
    for stem, fig in result.figures.items():
        assert unlabelled_axes(fig) == [], stem


def test_meta_fast_slow_figure_states_the_models_own_counts():
    from tying.experiments.meta_fast_slow import _figure

    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(3, 4, 1, generator=gen), torch.rand(3, 4, 1, generator=gen)
    xq = torch.linspace(-5, 5, 9).expand(3, 9)[..., None]
    preds = {"from scratch": torch.zeros(3, 9, 1)}
    fig = _figure(xs, ys, xq, torch.sin(xq), preds, np.ones(40), 7, 1234)
    assert "4 examples: adapt 7 fast weights (of 1,234)" in fig._suptitle.get_text()
    assert unlabelled_axes(fig) == []


def test_mechanistic_figure_says_its_legend_is_one_of_the_tables_trials():
    from tying.experiments.mechanistic import _figure

    rng = np.random.default_rng(0)
    example = {
        name: {k: torch.from_numpy(rng.normal(size=20)) for k in ("truth", "mechanistic", "deep")}
        for name in ("in distribution", "out of distribution")
    }
    fig = _figure(example, 5)
    assert "(one biology of 5; the table averages all 5)" in fig._suptitle.get_text()
    assert unlabelled_axes(fig) == []
