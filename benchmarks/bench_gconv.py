"""Group convolutions vs ``F.conv2d`` on the expanded bank and vs e2cnn (issue 19).

The code lives in :mod:`benchmarks.bench_nn_spatial` next to the other spatial layers;
this entry lets ``python -m benchmarks gconv`` run the group conv rows alone and
write ``bench-results/gconv.json`` (rendered by ``<!-- bench: gconv -->`` in docs/nn.md).
"""

from __future__ import annotations

from benchmarks.bench_nn_spatial import gconv_main as main

__all__ = ["main"]

if __name__ == "__main__":
    main()
