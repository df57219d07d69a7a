"""Stop 55: a figure whose save fails (the backend raises) leaves no pyplot figure open.

The runner closed each pyplot figure only after it was saved: when one failed, it and
every figure after it stayed registered, the failed one as pyplot's current figure, so
the next experiment in the same process (``--jobs 1``) that drew with ``plt.plot``
drew into it, and open figures piled up over a report.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tying.experiments.registry import Result  # noqa: E402
from tying.experiments.runner import run_experiment  # noqa: E402


def test_a_failed_save_closes_every_figure_of_the_experiment(temp_experiment, tmp_path):
    def broken_second_figure(size, seed):
        first, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        broken, ax = plt.subplots()
        ax.set_title(r"$\frac{1}$")  # mathtext the backend cannot draw: savefig raises
        third, _ = plt.subplots()
        return Result(
            passed=True, measured={"x": 1.0}, figures={"a": first, "b": broken, "c": third}
        )

    temp_experiment("stop55-broken-figure", broken_second_figure)
    before = plt.get_fignums()
    rec = run_experiment("stop55-broken-figure", out_dir=tmp_path)
    assert rec.status == "error" and rec.error.startswith("saving a figure failed:")
    assert rec.figures == [] and list((tmp_path / "figures").iterdir()) == []
    assert plt.get_fignums() == before  # none of the three left open
