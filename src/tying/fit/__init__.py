"""tying.fit: global fitting of many data sets with shared, per-group and local parameters.

Declare each parameter once by role; the library builds the physical vector,
evaluates the model on all data sets at once when it can, keeps the Jacobian
sparse and solves the normal equations by the Schur complement, so a fit
costs O(K) in the number of data sets K (claim C5).

Example:
    >>> import numpy as np
    >>> import tying.fit
    >>> x = np.linspace(0, 1, 10)
    >>> fit = tying.fit.GlobalFit(lambda x, slope, offset: slope * x + offset,
    ...                           [(x, 3 * x + 1), (x, 3 * x - 1)],
    ...                           shared=["slope"], local=["offset"],
    ...                           init={"slope": 1.0, "offset": 0.0})
    >>> result = fit.run()
    >>> round(result.values["slope"], 6), result.values["offset"].round(6).tolist()
    (3.0, [1.0, -1.0])
"""

from tying.fit.datasets import Dataset
from tying.fit.global_fit import GlobalFit
from tying.fit.model import ModelError
from tying.fit.profile import ProfileInterval, conf_interval
from tying.fit.result import FitResult
from tying.fit.roles import ParameterMap
from tying.fit.solvers import ConvergenceWarning, FitWarning
from tying.fit.uncertainty import eval_uncertainty

__all__ = [
    "ConvergenceWarning",
    "Dataset",
    "FitResult",
    "FitWarning",
    "GlobalFit",
    "ModelError",
    "ParameterMap",
    "ProfileInterval",
    "conf_interval",
    "eval_uncertainty",
]


def __getattr__(name: str):
    # lmfit's minimize / Minimizer / Model asked of tying.fit: name GlobalFit's way
    from tying.fit.lmfit_idioms import run_name_advice

    advice = run_name_advice("module 'tying.fit'", name)
    raise AttributeError(advice or f"module 'tying.fit' has no attribute {name!r}")
