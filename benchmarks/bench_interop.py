"""Ties through Hugging Face: files, loading and training speed on a GPT-2-small-shaped model.

A GPT-2-small-shaped model (12 layers, d=768, vocab 50,257, random init) with
its output head tied to the token embedding in two ways: by HF itself
(``tie_word_embeddings=True``, the anchor) and by a ``tying.Plan`` on an untied
config. Measured in the same run, interleaved:

1. file size and save time: ``tying.save`` and ``tying.hf.save_pretrained`` of the
   Plan-tied model vs HF's ``save_pretrained`` of the HF-tied one;
2. load time: ``tying.load`` into a fresh model and ``tying.hf.from_pretrained``
   vs HF's ``from_pretrained``;
3. forward+backward time, Plan-tied vs HF-tied (target <= 1.01).
"""

from __future__ import annotations

import copy
import logging
import os
import pathlib
import tempfile
import time

import torch

import tying
from benchmarks.common import compare, write

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _config(tied: bool):
    from transformers import GPT2Config

    return GPT2Config(
        n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
        tie_word_embeddings=tied,
    )  # fmt: skip


PLAN = tying.Plan([tying.share("lm_head.weight", like="transformer.wte.weight")])


def _models():
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    hf_tied = GPT2LMHeadModel(_config(True)).eval()  # eval: no dropout, so outputs compare
    plan_tied = copy.deepcopy(hf_tied)  # cheaper than a second random init of 124M
    plan_tied.config.tie_word_embeddings = False
    tying.untie(plan_tied)  # HF's tie becomes two copies, then the Plan ties them again
    PLAN.apply(plan_tied)
    return hf_tied, plan_tied


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _size(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return path.stat().st_size


def files(hf_tied, plan_tied, repeat: int = 2) -> list[dict]:
    from transformers import GPT2LMHeadModel

    import tying.hf

    logging.getLogger("transformers").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        f_tying, d_hf, d_ours = tmp / "m.safetensors", tmp / "hf", tmp / "ours"
        t_save_tying = min(_once(lambda: tying.save(plan_tied, f_tying)) for _ in range(repeat))
        t_save_hf = min(_once(lambda: hf_tied.save_pretrained(d_hf)) for _ in range(repeat))
        t_save_ours = min(
            _once(lambda: tying.hf.save_pretrained(plan_tied, d_ours)) for _ in range(repeat)
        )
        fresh = copy.deepcopy(plan_tied)
        t_load_tying = min(_once(lambda: tying.load(fresh, f_tying)) for _ in range(repeat))
        t_load_hf = min(_once(lambda: GPT2LMHeadModel.from_pretrained(d_hf)) for _ in range(repeat))
        t_load_ours = min(
            _once(lambda: tying.hf.from_pretrained(GPT2LMHeadModel, d_ours)) for _ in range(repeat)
        )
        x = torch.randint(0, 50257, (1, 16))
        again = tying.hf.from_pretrained(GPT2LMHeadModel, d_ours).eval()
        with torch.no_grad():
            exact = torch.equal(again(x).logits, plan_tied(x).logits)
        rows.append(
            {
                "case": "GPT-2 small (124M), save: tying.save / tying.hf.save_pretrained vs HF save_pretrained",
                "tying_save_MB": _size(f_tying) / 1e6,
                "tying_hf_save_MB": _size(d_ours) / 1e6,
                "hf_save_MB": _size(d_hf) / 1e6,
                "tying_save_s": t_save_tying,
                "tying_hf_save_s": t_save_ours,
                "hf_save_s": t_save_hf,
                "ratio_tying_save_vs_hf": t_save_tying / t_save_hf,
            }
        )
        rows.append(
            {
                "case": "GPT-2 small (124M), load: tying.load / tying.hf.from_pretrained vs HF from_pretrained",
                "tying_load_s": t_load_tying,
                "tying_hf_load_s": t_load_ours,
                "hf_load_s": t_load_hf,
                "ratio_tying_hf_load_vs_hf": t_load_ours / t_load_hf,
                "round_trip_logits_equal": exact,
            }
        )
    return rows


def _step(model, x):
    def run():
        model.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()

    return run


def train_speed(hf_tied, plan_tied, batch: int = 1, seq: int = 32, repeat: int = 5) -> dict:
    x = torch.randint(0, 50257, (batch, seq), generator=torch.Generator().manual_seed(1))
    # eval mode (no dropout): both compute the same thing, so the ratio is the tie's cost
    with torch.no_grad():
        same = torch.equal(hf_tied(x).logits, plan_tied(x).logits)
    t_plan, t_hf = compare(
        _step(plan_tied, x), _step(hf_tied, x), repeat=repeat, warmup=2, clock=time.process_time
    )
    return {
        "case": f"GPT-2 small (124M) fwd+bwd, batch {batch}x{seq}: Plan-tied vs HF-tied",
        "plan_ms": 1e3 * t_plan,
        "hf_ms": 1e3 * t_hf,
        "ratio_vs_hf": t_plan / t_hf,
        "target": "<= 1.01",
        "logits_equal": same,
    }


def main() -> None:
    torch.set_num_threads(2)
    hf_tied, plan_tied = _models()
    c = tying.count(plan_tied)
    rows = [*files(hf_tied, plan_tied), train_speed(hf_tied, plan_tied)]
    rows[0]["params_physical"] = c.physical
    write("interop", rows)


if __name__ == "__main__":
    main()
