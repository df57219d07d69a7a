"""Group conv shapes a reviewer would try, around issue 19's goal shape (stop 20).

``python -m benchmarks gconv_sweep`` writes ``bench-results/gconv_sweep.json`` and
prints one compact line per shape. Each line varies one thing around the goal shape
(16 fields, batch 8, 32², 3×3) for C4 and D4 (the groups the layers serve):

- fields 4, 8, 16, 32, 64 (D4 up to 32: 64 fields are 512 channels, a 1 s step),
- batch 1, 8, 32,
- sides 16, 32, 33, 64.

Three ratios per shape, each the min/median/max of ``ROUNDS`` interleaved CPU-time
rounds (one thread), fwd+bwd with gradients to the parameters:

- ``vs_bank``: the default ``GroupConv2d`` against ``F.conv2d`` on the same expanded
  bank (issue 19's goal: ≤ 1.05 for C4, ≤ 1.08 for D4; the tie's cost),
- ``vs_e2cnn``: the same layer against e2cnn's ``R2Conv`` in train mode on the same
  fields (goal ≤ 0.83; C4 only: e2cnn 0.2's D4 basis does not build under NumPy 2),
- ``wino_vs_e2cnn``: ``algorithm="winograd"`` against the same ``R2Conv``.

The shapes are fixed here, before any run, and not chosen from the results.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_nn_spatial import _e2cnn, _setup
from benchmarks.common import load_average, smoke, timed_rounds, write
from tying.nn import GroupConv2d

ROUNDS = 3
BASE = {"fields": 16, "batch": 8, "side": 32}


def _shapes() -> list[tuple[str, int, int, int]]:
    """``(group, fields, batch, side)``, one thing varied at a time around ``BASE``."""
    if smoke(0, 1):
        return [("C4", 2, 1, 8), ("D4", 2, 1, 9)]
    out = []
    for group, max_fields in (("C4", 64), ("D4", 32)):
        b, s = BASE["batch"], BASE["side"]
        out += [(group, f, b, s) for f in (4, 8, 16, 32, 64) if f <= max_fields]
        out += [(group, BASE["fields"], batch, s) for batch in (1, 32)]
        out += [(group, BASE["fields"], b, side) for side in (16, 33, 64)]
    return out


def _repeat(fn) -> int:
    """Pairs per round: about 0.3 s of steps on each side, between 5 and 31."""
    fn()
    t0 = time.process_time()
    fn()
    step = max(time.process_time() - t0, 1e-4)
    return max(5, min(31, int(0.3 / step)))


def _ratio(ours, anchor) -> str:
    """``"median (min–max)"`` of the rounds' CPU-time ratios (a string: one table cell)."""
    repeat = _repeat(ours)
    t_ours, t_anchor = timed_rounds(ours, anchor, n=ROUNDS, repeat=repeat, warmup=1)
    r = [a / b for a, b in zip(t_ours, t_anchor, strict=True)]
    return f"{statistics.median(r):.3f} ({min(r):.3f}–{max(r):.3f})"


def _e2cnn_layer(group: str, fields: int):
    gspaces, enn = _e2cnn()
    gspace = gspaces.Rot2dOnR2(N=4)
    ftype = enn.FieldType(gspace, fields * [gspace.regular_repr])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e2cnn's uint8-indexing deprecation warning
        return enn.GeometricTensor, ftype, enn.R2Conv(ftype, ftype, 3, padding=1)


def sweep_row(group: str, fields: int, batch: int, side: int) -> dict:
    n = 4 if group == "C4" else 8
    torch.manual_seed(0)
    ours = GroupConv2d(fields, fields, 3, group=group)
    wino = GroupConv2d(fields, fields, 3, group=group, algorithm="winograd")
    wino.load_state_dict(ours.state_dict())
    bank = nn.Parameter(ours.filter_bank().detach().clone())
    bias = nn.Parameter(ours.bias_bank().detach().clone())
    x = torch.randn(batch, fields, n, side, side)
    xf = x.flatten(1, 2)

    def step(layer):
        def run():
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()

        return run

    def run_bank():
        bank.grad = bias.grad = None
        F.conv2d(xf, bank, bias, padding=1).square().mean().backward()

    torch.testing.assert_close(ours(x).flatten(1, 2), F.conv2d(xf, bank, bias, padding=1))
    row = {"group": group, "fields": fields, "channels": fields * n, "batch": batch, "side": side}
    t0 = time.process_time()
    run_bank()
    row["anchor_ms"] = 1e3 * (time.process_time() - t0)  # one step: the scale of the shape
    row["vs_bank"] = _ratio(step(ours), run_bank)
    if group != "C4":
        # e2cnn 0.2's D4 basis (FlipRot2dOnR2) calls ndarray.tostring, gone in NumPy 2
        row["e2cnn"] = "skipped: e2cnn's FlipRot2dOnR2 does not build under NumPy 2"
        return row
    try:
        geometric, ftype, theirs = _e2cnn_layer(group, fields)
    except ImportError as err:
        row["e2cnn"] = f"skipped: {err}"
        return row
    gx = geometric(xf, ftype)

    def run_theirs():
        theirs.zero_grad(set_to_none=True)
        theirs(gx).tensor.square().mean().backward()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row["vs_e2cnn"] = _ratio(step(ours), run_theirs)
        row["wino_vs_e2cnn"] = _ratio(step(wino), run_theirs)
    return row


def _line(row: dict) -> str:
    shape = (
        f"{row['group']} {row['fields']:>2} fields ({row['channels']:>3} ch) "
        f"{row['batch']:>2}x{row['side']}²"
    )
    cells = (f"{k} {row.get(k, '-')}" for k in ("vs_bank", "vs_e2cnn", "wino_vs_e2cnn"))
    return f"{shape}: " + ", ".join(cells)


def main() -> None:
    rows = [_setup()]
    rows[0]["loadavg_start"] = load_average()
    for shape in _shapes():
        row = sweep_row(*shape)
        print(_line(row), flush=True)
        rows.append(row)
    rows[0]["loadavg_end"] = load_average()
    write("gconv_sweep", rows)


if __name__ == "__main__":
    main()
