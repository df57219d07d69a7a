"""Stop 41: a name repeated within one role is told so; the message read "declared in two
roles: shared and shared" (fails on the old code: the text differs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying import TieError
from tying.fit import GlobalFit

X = np.linspace(0, 1, 10)


def line(x, a, b):
    return a * x + b


@pytest.mark.parametrize("role", ["shared", "local"])
def test_a_name_repeated_in_one_role_is_named_as_a_repeat(role):
    other = "local" if role == "shared" else "shared"
    fit = GlobalFit(line, [(X, 2 * X + 1), (X, 2 * X + 2)], init={"a": 0.0, "b": 0.0},
                    **{role: ["a", "a"], other: ["b"]})  # fmt: skip
    with pytest.raises(TieError, match=rf"^{role} lists 'a' twice; .* remove the repeat$"):
        fit.run()


def test_a_name_in_two_roles_still_names_both():
    fit = GlobalFit(line, [(X, 2 * X + 1)], shared=["a", "b"], local=["a"],
                    init={"a": 0.0, "b": 0.0})  # fmt: skip
    with pytest.raises(TieError, match="declared in two roles: shared and local"):
        fit.run()


@settings(derandomize=True, deadline=None, max_examples=20)
@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4), st.booleans())
def test_property_a_declaration_fits_exactly_when_each_name_appears_once(shared, to_local):
    """Any list of names for shared (the rest local or fixed): the fit runs, and gives the
    least-squares answer, exactly when no name is listed twice; otherwise TieError."""
    rest = [n for n in ("a", "b") if n not in shared]
    roles = {"shared": shared, "local": rest} if to_local else {"shared": shared}
    if not to_local:
        roles["fixed"] = dict.fromkeys(rest, 1.0)
    fit = GlobalFit(line, [(X, 2 * X + 1), (X, 2 * X + 1)],
                    init={n: 0.0 for n in ("a", "b") if n not in roles.get("fixed", {})},
                    **roles)  # fmt: skip
    if len(set(shared)) < len(shared):
        with pytest.raises(TieError, match="twice"):
            fit.run()
        return
    res = fit.run()
    held = roles.get("fixed", {})
    design = np.column_stack([X, np.ones_like(X)])
    want = np.linalg.lstsq(design, 2 * X + 1 - 0.0, rcond=None)[0]
    if held:  # one parameter held at 1.0: the other from the reduced problem
        j = 0 if "a" in held else 1
        want = np.zeros(2)
        want[j] = 1.0
        col = design[:, 1 - j]
        want[1 - j] = col @ (2 * X + 1 - design[:, j]) / (col @ col)
    for j, n in enumerate("ab"):
        assert np.allclose(res.values[n], want[j], atol=1e-8)
