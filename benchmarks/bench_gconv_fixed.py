"""The group conv's fixed cost per training step, before and after stop 22 (issue 19).

``python -m benchmarks gconv_fixed`` writes ``bench-results/gconv_fixed.json`` and
prints one line per shape. Three steps are timed, one at a time, each right after an
anchor step (``F.conv2d`` on the same expanded bank), alternating, in CPU time on one
thread; each line gives the median extra time over the anchor step (µs, with the
quartiles) and the median pair ratio:

- ``A/A``: the anchor against itself (the noise floor),
- ``stop 21``: the per-call path the layer took before stop 22, kept here as the
  reference: ask ``_fast_ready()`` on every call, build the bank with ``_banks``-style
  look-ups and the bias with a ``|G|``-way stack,
- ``now``: the layer.

Both layer steps clear their gradients by a loop, as the anchor does, so only the
forward's path differs. The shapes are fixed here, before any run: the goal shape (C4
16 fields, 8×32²), the small cells of the stop 20 sweep (C4 and D4 4 fields, 8×32²;
C4 16 fields, 8×16²), the tiny layer of the ``gconv`` rows (C4 4 fields, 1×16²) and,
since stop 23, the two banks where the numba loops start to serve (C4 32 fields,
147,456 entries) and the large bank of the ``gconv`` rows (C4 64 fields, 590,000).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import load_average, smoke, steady_allocator, write
from tying.nn import GroupConv2d

SHAPES = [  # (group, fields, batch, side, pairs per variant)
    ("C4", 16, 8, 32, 120),
    ("C4", 4, 8, 32, 240),
    ("D4", 4, 8, 32, 240),
    ("C4", 16, 8, 16, 240),
    ("C4", 4, 1, 16, 600),
    # stop 23: banks at and above the numba loops' threshold (131,072 entries), where
    # stop 21's path is also the general path the loops replace
    ("C4", 32, 2, 16, 120),
    ("C4", 64, 2, 16, 60),
]


def stop21_forward(layer: GroupConv2d, x: torch.Tensor) -> torch.Tensor:
    """The forward as it ran before stop 22 (the reference of this benchmark)."""
    n = len(layer.elements)
    if x.ndim != 5 or x.shape[1] != layer.in_channels or x.shape[2] != n:
        raise ValueError(f"expected (B, {layer.in_channels}, {n}, H, W), got {tuple(x.shape)}")
    if not layer._fast_ready():
        raise RuntimeError("the reference serves the intact tie only")
    bank = layer._fast_bank(layer._physical_params())
    bias = layer._modules["biases"]._parameters["e"]
    bias = torch.stack([bias] * n, dim=1).view(-1)  # (C_out·|G|,): stop 21's stack
    y = F.conv2d(x.flatten(1, 2), bank, bias, padding=layer.padding)
    return y.unflatten(1, (layer.out_channels, n))


def fixed_cost_row(group: str, fields: int, batch: int, side: int, pairs: int) -> dict:
    n = 4 if group == "C4" else 8
    torch.manual_seed(0)
    layer = GroupConv2d(fields, fields, 3, group=group)
    bank = nn.Parameter(layer.filter_bank().detach().clone())
    bias = nn.Parameter(layer.bias_bank().detach().clone())
    x = torch.randn(batch, fields, n, side, side)
    xf = x.flatten(1, 2)
    params = list(layer.parameters())

    def anchor():
        bank.grad = bias.grad = None
        F.conv2d(xf, bank, bias, padding=1).square().mean().backward()

    def old():
        for p in params:
            p.grad = None
        stop21_forward(layer, x).square().mean().backward()

    def now():
        for p in params:
            p.grad = None
        layer(x).square().mean().backward()

    # the two layer paths compute the same step, bit for bit
    old()
    g_old = [p.grad.clone() for p in params]
    now()
    same = all(torch.equal(a, p.grad) for a, p in zip(g_old, params, strict=True))
    if not (same and torch.equal(stop21_forward(layer, x), layer(x))):
        raise RuntimeError(f"{group} {fields} fields: the layer no longer equals stop 21's path")

    variants = {"A/A": anchor, "stop 21": old, "now": now}
    extra = {k: [] for k in variants}
    ratio = {k: [] for k in variants}
    clock = time.process_time
    for f in variants.values():
        f()
    rounds = 6
    for _ in range(smoke(rounds, 1)):
        for key, f in variants.items():
            for _ in range(smoke(pairs // rounds, 2)):
                t0 = clock()
                anchor()
                t1 = clock()
                f()
                t2 = clock()
                extra[key].append(1e6 * ((t2 - t1) - (t1 - t0)))
                ratio[key].append((t2 - t1) / max(t1 - t0, 1e-9))
    row = {"group": group, "fields": fields, "batch": batch, "side": side}
    for key in variants:
        e = sorted(extra[key])
        q = len(e) // 4
        row[f"{key} extra_us"] = round(statistics.median(e), 1)
        row[f"{key} extra_us_q1_q3"] = (round(e[q], 1), round(e[3 * q], 1))
        row[f"{key} pair_ratio"] = round(statistics.median(ratio[key]), 4)
    row["pairs"] = len(extra["now"])
    return row


def _line(row: dict) -> str:
    shape = f"{row['group']} {row['fields']:>2} fields {row['batch']}x{row['side']}²"
    cells = []
    for key in ("A/A", "stop 21", "now"):
        q1, q3 = row[f"{key} extra_us_q1_q3"]
        cells.append(
            f"{key} {row[f'{key} extra_us']:+.0f} us ({q1:+.0f}..{q3:+.0f}), "
            f"ratio {row[f'{key} pair_ratio']:.3f}"
        )
    return f"{shape}: " + "; ".join(cells)


def main() -> None:
    torch.set_num_threads(1)
    rows = [{"case": "setup", "threads": 1, "allocator_pinned": steady_allocator()}]
    rows[0]["loadavg_start"] = load_average()
    for shape in SHAPES if not smoke(0, 1) else SHAPES[-1:]:
        row = fixed_cost_row(*shape)
        print(_line(row), flush=True)
        rows.append(row)
    rows[0]["loadavg_end"] = load_average()
    write("gconv_fixed", rows)


if __name__ == "__main__":
    main()
