"""mkdocs hook: measured benchmark figures are rendered from ``bench-results/*.json``.

The front page is the README itself (``<!-- readme -->`` in ``docs/index.md``),
so the two cannot drift apart. A page writes ``<!-- bench: NAME -->`` where a benchmark's table belongs; the hook
replaces it with the rows of ``bench-results/NAME.json`` (written by
``python -m benchmarks NAME``), so no measured number is typed into the docs by hand.
Without that file the page says how to produce it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

MARK = re.compile(r"<!--\s*bench:\s*([\w-]+)\s*-->")
RESULTS = pathlib.Path(os.environ.get("TYING_BENCH_OUT", "bench-results"))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def table(name: str, results: pathlib.Path = RESULTS) -> str:
    """Markdown table of one benchmark's last results (or how to produce them)."""
    path = results / f"{name}.json"
    if not path.exists():
        return (
            f"*No results of benchmark `{name}` on this machine yet: run "
            f"`python -m benchmarks {name}` (or `make bench`) and rebuild the docs.*"
        )
    rows = json.loads(path.read_text())
    if not rows:
        return f"*Benchmark `{name}` wrote no rows.*"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return f"Last run (`bench-results/{name}.json`):\n\n" + "\n".join(lines)


def all_tables(
    benchmarks: pathlib.Path = pathlib.Path("benchmarks"), results: pathlib.Path = RESULTS
) -> str:
    """One section per results file ``bench-results/*.json``, then one per
    ``benchmarks/bench_*.py`` that has written none yet (how to produce it).

    A benchmark writes files under names of its own (``bench_chem_sets.py`` writes
    ``chem-sets.json``, ``bench_hmm.py`` several ``hmm-*.json``), so the page lists the
    files, not the scripts' names: looking them up by script name said "no results
    yet" for results that were there, and never showed the others."""
    written = sorted(p.stem for p in results.glob("*.json"))
    scripts = sorted(p.stem[len("bench_") :] for p in benchmarks.glob("bench_*.py"))

    def wrote(script: str) -> bool:
        keys = {script, script.replace("_", "-")}
        return any(w in keys or w.startswith(script.replace("_", "-") + "-") for w in written)

    names = written + [s for s in scripts if not wrote(s)]
    return "\n\n".join(f"### `{name}`\n\n{table(name, results)}" for name in names)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
README_MARK = "<!-- readme -->"


def readme() -> str:
    """The README as the site's front page: one text, its ``docs/`` links made relative."""
    return re.sub(r"\]\(docs/", "](", README.read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, **_: object) -> str:
    if README_MARK in markdown:
        markdown = markdown.replace(README_MARK, readme())
    return MARK.sub(lambda m: all_tables() if m.group(1) == "all" else table(m.group(1)), markdown)
