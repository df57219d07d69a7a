"""Engine overhead, as ratios against hand-written ties in the same run (issue: tie engine).

1. ALBERT: a 12-layer transformer encoder tied with ``tying.Plan`` vs the same
   model written by hand as one layer applied 12 times (target ≤ 1.03).
2. Tied autoencoder (``Transposed``) vs hand-written ``F.linear(h, W.t())``
   (target ≤ 1.10), with ``torch.nn.utils.parametrize`` (the ``original`` set to
   the encoder's parameter) as the anchor people use today.
3. Files: ``tying.save``/``tying.load`` (SHA-256 over metadata and tensors,
   fsync, atomic rename, ties re-created) vs plain ``safetensors`` ``save_file`` /
   ``load_file`` + ``load_state_dict`` on the same tied model: the price of the
   integrity guarantees.
4. Deep stacks: building a ``TiedResidualNet`` of N blocks (its plan applied) against
   the untied one, at N = 256 and 1,024: a plan must cost in proportion to the
   model (stop 52: 1,024 tied blocks took 21.8 s, the plan's scans were quadratic).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as P
from torch import nn

import tying
from benchmarks.common import compare, write


def _layer(d: int) -> nn.Module:
    return nn.TransformerEncoderLayer(
        d, nhead=4, dim_feedforward=4 * d, dropout=0.0, batch_first=True
    )


class Tied(nn.Module):
    def __init__(self, d: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(_layer(d) for _ in range(depth))
        tying.Plan([tying.share("layers.*", like="layers.0")]).apply(self)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ByHand(nn.Module):
    def __init__(self, d: int, depth: int):
        super().__init__()
        self.layer = _layer(d)
        self.depth = depth

    def forward(self, x):
        for _ in range(self.depth):
            x = self.layer(x)
        return x


def _step(model: nn.Module, x: torch.Tensor):
    def run():
        model.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()

    return run


def albert(d: int = 256, depth: int = 12, batch: int = 8, seq: int = 64) -> dict:
    torch.manual_seed(0)
    tied, hand = Tied(d, depth), ByHand(d, depth)
    hand.layer.load_state_dict(tied.layers[0].state_dict())
    x = torch.randn(batch, seq, d)
    torch.testing.assert_close(tied(x), hand(x))
    t_ours, t_hand = compare(_step(tied, x), _step(hand, x), repeat=9)
    c = tying.count(tied)
    return {
        "case": f"ALBERT {depth}x TransformerEncoderLayer(d={d}), fwd+bwd",
        "ours_ms": 1e3 * t_ours,
        "hand_ms": 1e3 * t_hand,
        "ratio_vs_hand": t_ours / t_hand,
        "target": "<= 1.03",
        "params_physical": c.physical,
        "params_logical": c.logical,
    }


class _T(nn.Module):
    def forward(self, w):
        return w.t()


def autoencoder(d: int = 512, k: int = 128, batch: int = 256) -> list[dict]:
    torch.manual_seed(0)
    ours = nn.ModuleDict({"enc": nn.Linear(d, k), "dec": nn.Linear(k, d)})
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(
        ours
    )

    W = nn.Parameter(ours["enc"].weight.detach().clone())
    b1 = nn.Parameter(ours["enc"].bias.detach().clone())
    b2 = nn.Parameter(ours["dec"].bias.detach().clone())

    anchor = nn.ModuleDict({"enc": nn.Linear(d, k), "dec": nn.Linear(k, d)})
    anchor.load_state_dict(
        {
            "enc.weight": W.detach(),
            "enc.bias": b1.detach(),
            "dec.bias": b2.detach(),
            "dec.weight": W.detach().t(),
        }
    )
    P.register_parametrization(anchor["dec"], "weight", _T(), unsafe=True)
    anchor["dec"].parametrizations.weight.original = anchor["enc"].weight

    x = torch.randn(batch, d)

    def run_ours():
        ours.zero_grad(set_to_none=True)
        ours["dec"](torch.tanh(ours["enc"](x))).pow(2).mean().backward()

    def run_hand():
        W.grad = b1.grad = b2.grad = None
        F.linear(torch.tanh(F.linear(x, W, b1)), W.t(), b2).pow(2).mean().backward()

    def run_anchor():
        anchor.zero_grad(set_to_none=True)
        anchor["dec"](torch.tanh(anchor["enc"](x))).pow(2).mean().backward()

    run_ours(), run_hand()
    torch.testing.assert_close(ours["enc"].weight.grad, W.grad)
    t_ours, t_hand = compare(run_ours, run_hand, repeat=31, warmup=5)
    t_ours2, t_anchor = compare(run_ours, run_anchor, repeat=31, warmup=5)
    return [
        {
            "case": f"tied AE {d}->{k} (Transposed), fwd+bwd",
            "ours_ms": 1e3 * t_ours,
            "hand_ms": 1e3 * t_hand,
            "ratio_vs_hand": t_ours / t_hand,
            "target": "<= 1.10",
        },
        {
            "case": "same tie, anchor torch.nn.utils.parametrize",
            "ours_ms": 1e3 * t_ours2,
            "parametrize_ms": 1e3 * t_anchor,
            "ratio_vs_parametrize": t_ours2 / t_anchor,
        },
    ]


class _HandRotated(nn.Module):
    """A hand-written Rotated tie: reads the encoder's weight, rotated, at every call."""

    def __init__(self, enc: nn.Linear, bias: torch.Tensor):
        super().__init__()
        self._enc = [enc]  # not registered: the encoder owns the weight
        self.bias = nn.Parameter(bias)

    def forward(self, h):
        return F.linear(h, torch.rot90(self._enc[0].weight, 1, (-2, -1)), self.bias)


def computed_reads(d: int = 64, k: int = 16, batch: int = 32) -> list[dict]:
    """A computed tie (Rotated) in a tiny AE, where the per-read cost shows most.

    Every read of a computed slot also records the tensor it hands out (version counter
    and data pointer), so that a write into it is refused instead of lost. The rows time
    the tied model against the same tie written by hand (a module whose forward reads
    ``rot90(enc.weight)``), CPU time, interleaved: forward+backward, and a no-grad forward
    (the worst case).
    """
    torch.manual_seed(0)
    ours = nn.ModuleDict({"enc": nn.Linear(d, k), "dec": nn.Linear(k, d)})
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Rotated())]).apply(ours)
    hand_enc = nn.Linear(d, k)
    hand_enc.load_state_dict(ours["enc"].state_dict())
    hand_dec = _HandRotated(hand_enc, ours["dec"].bias.detach().clone())
    x = torch.randn(batch, d)

    def hand_fwd():  # two module calls, as ours
        return hand_dec(torch.tanh(hand_enc(x)))

    def ours_fwd():
        return ours["dec"](torch.tanh(ours["enc"](x)))

    torch.testing.assert_close(ours_fwd(), hand_fwd(), rtol=0, atol=0)

    def loop(fn, grad):
        def run():
            for _ in range(200):
                if grad:
                    fn().pow(2).mean().backward()
                else:
                    with torch.no_grad():
                        fn()

        return run

    rows = []
    for grad in (True, False):
        t_ours, t_hand = compare(
            loop(ours_fwd, grad), loop(hand_fwd, grad), repeat=15, warmup=2, clock=time.process_time
        )
        rows.append(
            {
                "case": f"tied AE {d}->{k} (Rotated), {'fwd+bwd' if grad else 'no-grad fwd'}, "
                f"batch {batch}",
                "ours_us": 1e6 * t_ours / 200,
                "hand_us": 1e6 * t_hand / 200,
                "ratio_vs_hand": t_ours / t_hand,
            }
        )
    return rows


def files(vocab: int = 8192, d: int = 256, depth: int = 6) -> list[dict]:
    import tempfile

    from safetensors.torch import load_file, save_file

    def build():
        m = nn.ModuleDict(
            {
                "embed": nn.Embedding(vocab, d),
                "layers": nn.ModuleList(nn.Linear(d, d) for _ in range(depth)),
                "lm_head": nn.Linear(d, vocab, bias=False),
            }
        )
        m["lm_head"].weight = m["embed"].weight  # a hand tie, as HF makes it
        return m

    torch.manual_seed(0)
    model = build()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(model)
    fresh = build()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(fresh)
    tmp = tempfile.mkdtemp()
    ours_path, anchor_path = f"{tmp}/ours.safetensors", f"{tmp}/anchor.safetensors"
    # the anchor writes what tying writes (each physical tensor once), without the checks
    physical = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}

    t_save, t_save_anchor = compare(
        lambda: tying.save(model, ours_path),
        lambda: save_file(physical, anchor_path),
        repeat=9,
        warmup=2,
    )

    def load_anchor():
        sd = load_file(anchor_path)
        sd["lm_head.weight"] = sd["embed.weight"]
        fresh.load_state_dict(sd)

    t_load, t_load_anchor = compare(
        lambda: tying.load(fresh, ours_path), load_anchor, repeat=9, warmup=2
    )
    t_unchecked, t_load_anchor2 = compare(
        lambda: tying.load(fresh, ours_path, verify_hash=False), load_anchor, repeat=9, warmup=2
    )
    c = tying.count(model)
    case = f"embed {vocab}x{d} (hand-tied head) + {depth} tied Linear({d}), {c.physical:,} params"
    return [
        {
            "case": f"tying.save vs safetensors.save_file: {case}",
            "ours_ms": 1e3 * t_save,
            "anchor_ms": 1e3 * t_save_anchor,
            "ratio_vs_safetensors": t_save / t_save_anchor,
        },
        {
            "case": "tying.load vs load_file + load_state_dict, same file content",
            "ours_ms": 1e3 * t_load,
            "anchor_ms": 1e3 * t_load_anchor,
            "ratio_vs_safetensors": t_load / t_load_anchor,
        },
        {
            "case": "tying.load(verify_hash=False): the same without the SHA-256 check",
            "ours_ms": 1e3 * t_unchecked,
            "anchor_ms": 1e3 * t_load_anchor2,
            "ratio_vs_safetensors": t_unchecked / t_load_anchor2,
        },
    ]


def deep_stack(depths: tuple[int, ...] = (256, 1024), repeat: int = 3) -> list[dict]:
    """Build time of a tied residual stack (one plan over ``depth`` blocks) against the
    untied stack, CPU time, best of ``repeat``; and how the tied build grows with depth."""
    from tying.nn import TiedResidualNet

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times)

    rows, tied_s = [], {}
    for depth in depths:
        tied_s[depth] = best(lambda depth=depth: TiedResidualNet(3, 16, depth))
        untied = best(lambda depth=depth: TiedResidualNet(3, 16, depth, tied=False))
        rows.append(
            {
                "case": f"TiedResidualNet(3, 16, {depth}) built: tied vs untied (CPU)",
                "tied_s": tied_s[depth],
                "untied_s": untied,
                "ratio_vs_untied": tied_s[depth] / untied,
            }
        )
    lo, hi = min(depths), max(depths)
    rows.append(
        {
            "case": f"tied build, {hi} blocks vs {lo} (linear: {hi / lo:.0f})",
            "ratio": tied_s[hi] / tied_s[lo],
        }
    )
    for row in rows:
        print(
            "  "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )
    return rows


def main() -> None:
    torch.set_num_threads(2)
    rows = [albert(), *autoencoder(), *computed_reads(), *files(), *deep_stack()]
    write("core", rows)


if __name__ == "__main__":
    main()
