"""The HTML report: ``report/index.html``, ``report/results.json``, ``report/figures/``.

Example:
    >>> import tempfile, pathlib
    >>> from tying.experiments.runner import run_many
    >>> from tying.report import claim_folder, write_report
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> claim_folder(out, ["param-counts"], fresh=True)
    >>> records = run_many(["param-counts"], size="quick", out_dir=out)
    >>> paths = write_report(records, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    >>> sorted(p.name for p in paths.values())
    ['index.html', 'results.json']
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from tying.experiments import REGISTRY, load_all
from tying.experiments.claims import claim_for
from tying.experiments.output import MANIFEST, OutputFolderError, claim_folder, record_files
from tying.experiments.runner import RunRecord, import_errors
from tying.report.environment import collect_environment
from tying.report.html import render_page, summary_rows

_PAGE = ("index.html", "results.json")

__all__ = [
    "MANIFEST",
    "OutputFolderError",
    "claim_folder",
    "record_files",
    "results_dict",
    "write_report",
]


def results_dict(records: Sequence[RunRecord], environment: dict, runtime_s: float) -> dict:
    """The machine-readable report: one entry per experiment that ran, plus what is missing."""
    load_all()
    rows = summary_rows(records, REGISTRY)
    experiments = []
    for rec in records:
        entry = rec.to_dict()
        claim = claim_for(rec.id)
        entry["code"] = claim.code if claim else ""
        entry["shows"] = claim.shows if claim else ""
        experiments.append(entry)
    return {
        "passed": sum(r.passed for r in records),
        "total": len(records),
        "runtime_s": runtime_s,
        "environment": environment,
        "experiments": experiments,
        "not_run": [row["id"] for row in rows if row["status"] == "not-run"],
        "not_implemented": [
            {"id": row["id"], "code": row["code"], "claim": row["claim"]}
            for row in rows
            if row["status"] == "not-implemented"
        ],
        "import_errors": import_errors(),
    }


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | pathlib.Path,
    *,
    size: str,
    seed: int,
    jobs: int,
    runtime_s: float,
) -> dict[str, pathlib.Path]:
    """Write ``index.html`` and ``results.json`` into ``out_dir`` and list them in its manifest.

    Args:
        records: what :func:`tying.experiments.runner.run_many` returned (figures
            already saved under ``out_dir/figures``).
        out_dir: the report folder, checked with
            :func:`~tying.experiments.output.claim_folder` before the experiments ran.
        size, seed, jobs: how the experiments were run (shown in the environment).
        runtime_s: wall time of the whole run.

    Returns:
        ``{"html": path, "json": path}``.

    Raises:
        OutputFolderError: ``out_dir`` holds a file tying did not write (a user's
            ``index.html``, say) or cannot be written; nothing is written then.
    """
    load_all()
    out = pathlib.Path(out_dir)
    # refuses to overwrite a page the user made; the records' own figures are ours
    claim_folder(out, [r.id for r in records], fresh=False, writes_page=True)
    threads = sorted({r.threads for r in records})
    env = collect_environment(
        size=size, seed=seed, jobs=jobs, **{"torch threads per experiment": threads}
    )
    page = render_page(records, REGISTRY, env, runtime_s, import_errors())
    html_path, json_path = out / "index.html", out / "results.json"
    html_path.write_text(page, encoding="utf-8")
    results = results_dict(records, env, runtime_s)
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    figures = [f for r in records for f in r.figures if (out / f).is_file()]
    record_files(out, [*_PAGE, *figures])
    return {"html": html_path, "json": json_path}
