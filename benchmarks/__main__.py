"""Run every ``benchmarks/bench_*.py`` (each defines ``main()``), or the ones named.

python -m benchmarks            # all
python -m benchmarks core hmm   # bench_core.py and bench_hmm.py
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import traceback


def main(argv: list[str]) -> int:
    here = pathlib.Path(__file__).parent
    names = argv or sorted(p.stem[len("bench_") :] for p in here.glob("bench_*.py"))
    failed = []
    for name in names:
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main()
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"benchmarks that raised: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
