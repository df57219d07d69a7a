"""An empty experiment id is named as one, not guessed at (stop 62).

``tying run "$ID"`` with ``ID`` unset said "did you mean 'translation-equivariance'?",
the closest registered id to nothing.
"""

from __future__ import annotations

import pytest

from tying.cli import EXIT_USAGE, main
from tying.experiments.registry import get
from tying.experiments.runner import run_experiment


@pytest.mark.parametrize("given", ["", " ", "\t"])
def test_an_empty_id_is_named(given):
    with pytest.raises(KeyError, match=r"is empty: most likely an unset variable") as info:
        get(given)
    assert "did you mean" not in str(info.value)
    with pytest.raises(KeyError, match=r"give an id such as"):
        run_experiment(given)


def test_tying_run_of_an_empty_id(capsys):
    assert main(["run", ""]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "experiment id '' is empty" in err and "did you mean" not in err
