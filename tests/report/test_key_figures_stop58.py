"""Stop 58: a key figure never rounds a checked value onto the tolerance it is checked against.

Twenty-five formats in key figures, notes, table cells and figure titles of the
experiments wrote measured values with ``{x:.1e}``, ``{x:.0e}`` or ``{x:.1g}`` (and
a table cell 48! with ``{:.3e}``), past the stop-47 guard
(which caught only fixed decimals). Checks compare with powers of ten, and these
formats round onto them: an error of 9.96e-13 under a ``< 1e-12`` check printed
``1.0e-12`` beside PASS (``.0e``: ``1e-12``), as if it sat on the tolerance, and a
``.1g`` of 0.96 printed ``1``. They now go through
:func:`tying.report.format.format_number` (``9.96e-13``), and the guard below scans
the experiments for any float format that rounds to a few digits: a precision with
``e``/``g``/no type, or a bare ``:g``/``:e`` (``:f``/``:%``) on anything but a configured constant.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import tying.experiments
from tying.report.format import format_number

EXPERIMENTS = pathlib.Path(tying.experiments.__file__).parent

# ``{x:.1e}``, ``{x:+.2G}``, ``{x:.3}``, ``{x:,.1n}``: a precision that rounds (fixed
# decimals, ``.4f`` / ``.0%``, are the stop-47 guard's; _BARE names them too)
_ROUNDS = re.compile(r"\.\d+[eEgGn]?$")
# ``{x:g}``: six digits, 9.9999996e-13 -> 1e-12; ``{x:f}``, ``{x:%}``: six decimals, 1e-7 -> 0.000000
_BARE = re.compile(r"[eEgGnfF%]$")
# a bare :g prints a configured constant as the user typed it (tol 1e-12 -> "1e-12"):
# values read from cfg, and these names bound to cfg fields or a CLI argument
_CONFIGURED_NAMES = {
    "dp_sgd.py": {"delta"},  # cfg.delta
    "gradients.py": {"lo", "hi"},  # cfg.band
    "multitask.py": {"lam"},  # for lam in cfg.lams
    "runner.py": {"timeout"},  # the --timeout the user passed
    "spatial_segmentation.py": {"r"},  # for r in cfg.radii
}


def _configured(file: str, expr: ast.expr) -> bool:
    root = expr
    while isinstance(root, ast.Attribute | ast.Subscript):
        root = root.value
    return isinstance(root, ast.Name) and (
        root.id == "cfg" or root.id in _CONFIGURED_NAMES.get(file, ())
    )


def _flagged(file: str, spec: str, expr: ast.expr | None) -> bool:
    if _ROUNDS.search(spec):
        return True
    return bool(_BARE.search(spec)) and not (expr is not None and _configured(file, expr))


def rounding_float_sites(folder: pathlib.Path) -> list[str]:
    """``file:line {expr:spec}`` of every float format that rounds a value to few digits:
    f-strings, ``"...".format(x)``, ``"..." % x`` and ``format(x, spec)``."""
    sites = []
    for path in sorted(folder.glob("*.py")):
        name = path.name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
                spec = "".join(
                    v.value if isinstance(v, ast.Constant) else "{}"
                    for v in node.format_spec.values
                )
                if _flagged(name, spec, node.value):
                    sites.append(f"{name}:{node.lineno} {{{ast.unparse(node.value)}:{spec}}}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Constant)
                and isinstance(node.func.value.value, str)
            ):
                for spec in re.findall(r"\{[^{}:]*:([^{}]*)\}", node.func.value.value):
                    if _flagged(name, spec, None):
                        sites.append(f"{name}:{node.lineno} str.format {{:{spec}}}")
            elif (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Mod)
                and isinstance(node.left, ast.Constant)
                and isinstance(node.left.value, str)
            ):
                for spec in re.findall(r"%[-+ #0]*\d*(?:\.\d+)?[eEgGfF]", node.left.value):
                    sites.append(f"{name}:{node.lineno} {spec}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "format"
                and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _flagged(name, node.args[1].value, node.args[0])
            ):
                sites.append(f"{name}:{node.lineno} format(x, {node.args[1].value!r})")
    return sites


def test_no_float_format_rounds_a_measured_value_in_the_experiments():
    sites = rounding_float_sites(EXPERIMENTS)
    assert not sites, (
        "these formats round a measured value onto a power of ten (9.96e-13 printed "
        "1.0e-12 beside a < 1e-12 PASS); write it with "
        "tying.report.format.format_number(x), which keeps the digits that say it is not "
        "(a configured constant may keep a bare :g; add its name to _CONFIGURED_NAMES): "
        + "; ".join(sites)
    )


def test_the_guard_finds_every_kind_it_names(tmp_path):
    (tmp_path / "gradients.py").write_text(
        'a = f"{err:.1e} {err:.0e} {err:.1g} {err:+.2G} {err:.3} {err:g} {e[0]:e} {x.y:n} {u:f} {v:%}"\n'
        'b = f"{cfg.tol:g} {cfg.band[0]:g} {lo:g} {hi:g} {n:,} {n:>5} {s!r} {x:.4f}"\n'
        'c = "{:.2e} and {0:g}".format(x, y), "%.1e" % x, "%g" % x, "%.3f" % x, "%d %s" % (n, s)\n'
        'd = format(err, ".1e"), format(cfg.tol, "g"), format(n, ",")\n'
    )
    found = [s.split(" ", 1)[1] for s in rounding_float_sites(tmp_path)]
    assert found == [
        "{err:.1e}",
        "{err:.0e}",
        "{err:.1g}",
        "{err:+.2G}",
        "{err:.3}",
        "{err:g}",
        "{e[0]:e}",
        "{x.y:n}",
        "{u:f}",
        "{v:%}",
        "{x:.4f}",  # fixed decimals: the stop-47 guard's too
        "str.format {:.2e}",
        "str.format {:g}",
        "%.1e",
        "%g",
        "%.3f",
        "format(x, '.1e')",
    ]


def test_a_configured_name_is_allowed_only_in_its_own_file(tmp_path):
    (tmp_path / "hmm.py").write_text('a = f"{lo:g} {timeout:g} {cfg.tol:g}"\n')
    assert [s.split(" ", 1)[1] for s in rounding_float_sites(tmp_path)] == [
        "{lo:g}",
        "{timeout:g}",
    ]


@pytest.mark.parametrize(
    ("value", "spec", "old", "new"),
    [
        (9.96e-13, ".1e", "1.0e-12", "9.96e-13"),  # beside a < 1e-12 check
        (9.6e-13, ".0e", "1e-12", "9.6e-13"),
        (0.96, ".1g", "1", "0.96"),
        (0.0996, ".1g", "0.1", "0.0996"),
        (3.2e-15, ".1e", "3.2e-15", "3.2e-15"),  # others keep their look
        (0.0, ".1e", "0.0e+00", "0"),  # an exact zero reads 0
    ],
)
def test_format_number_keeps_what_the_old_formats_rounded_away(value, spec, old, new):
    assert (format(value, spec), format_number(value)) == (old, new)
