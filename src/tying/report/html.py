"""The report page: one self-contained HTML file, figures as PNG files beside it.

Layout, top to bottom: a summary table (one row per claim of CLAIMS.md and per
registered experiment), one section per experiment that ran, the environment.
Claims without an experiment show as "not yet implemented" rows; registered
experiments left out with ``--only`` as "not run".
"""

from __future__ import annotations

import html
import pathlib
from collections.abc import Sequence
from typing import Any

from tying.experiments.claims import CHAPTER_FILES, CLAIMS, EXTRA_CLAIMS, Claim, claim_for
from tying.experiments.registry import failed_module
from tying.experiments.runner import RunRecord
from tying.report.format import format_runtime, format_value

__all__ = ["BADGES", "render_page", "summary_rows"]

#: status -> (badge text, css class)
BADGES: dict[str, tuple[str, str]] = {
    "pass": ("PASS", "pass"),
    "fail": ("FAIL", "fail"),
    "error": ("ERROR", "error"),
    "missing-extra": ("MISSING EXTRA", "extra"),
    "not-run": ("NOT RUN", "notrun"),
    "not-implemented": ("NOT YET IMPLEMENTED", "missing"),
    "import-failed": ("IMPORT FAILED", "error"),
}

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 0 0 6px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
.lede { color: #4a5365; margin: 0 0 18px; }
.totals { display: flex; gap: 12px; margin: 0 0 18px; flex-wrap: wrap; }
.totals span { background: #fff; border: 1px solid #dde1e8; border-radius: 6px;
               padding: 6px 12px; }
table { border-collapse: collapse; background: #fff; width: 100%; margin: 4px 0 12px; }
th, td { border: 1px solid #dde1e8; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary td.code { white-space: nowrap; font-weight: 600; }
table.summary td.id { white-space: nowrap; }
table.summary img { height: 44px; display: block; }
.badge { display: inline-block; border-radius: 4px; padding: 1px 7px; font-size: 12px;
         font-weight: 700; letter-spacing: .03em; white-space: nowrap; color: #fff; }
.badge.pass { background: #1f8a4c; } .badge.fail { background: #c0392b; }
.badge.error { background: #7b1f1f; } .badge.extra { background: #d68910; }
.badge.notrun { background: #7f8c8d; } .badge.missing { background: #c4cad3; color: #333; }
tr.not-implemented td { color: #7a8291; }
section.claim { background: #fff; border: 1px solid #dde1e8; border-radius: 8px;
                padding: 16px 20px; margin: 18px 0; }
section.claim .meta { color: #5a6477; font-size: 13px; margin: 2px 0 8px; }
section.claim p.sentence { font-size: 16px; margin: 8px 0; }
figure { margin: 10px 0; }
figure img { max-width: 100%; border: 1px solid #e3e6eb; background: #fff; }
figcaption { font-size: 12px; color: #5a6477; }
pre.error { background: #fff3f2; border: 1px solid #f0c2bd; padding: 10px; overflow-x: auto;
            font-size: 12px; white-space: pre-wrap; }
p.broken, span.broken, span.broken a { color: #c0392b; font-weight: 600; }
table.env { width: auto; }
footer { color: #5a6477; font-size: 13px; margin-top: 28px; }
"""

# Marks every figure as loaded or not once the page has loaded, and says so visibly:
# a person sees a broken figure, and the browser test reads the data attributes.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), broken = 0;
  imgs.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.dataset.loaded = ok ? "yes" : "no";
    img.dataset.naturalWidth = String(img.naturalWidth);
    if (!ok) {
      broken += 1;
      var p = document.createElement("p");
      p.className = "broken";
      p.textContent = "figure failed to load: " + img.getAttribute("src");
      img.insertAdjacentElement("afterend", p);
    }
  });
  document.body.dataset.figures = String(imgs.length);
  document.body.dataset.brokenFigures = String(broken);
  document.body.dataset.figuresChecked = "yes";
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: str) -> str:
    text, css = BADGES[status]
    return f'<span class="badge {css}">{text}</span>'


def _chapter_label(code: str) -> str:
    name = CHAPTER_FILES.get(code)
    return f"chapter {code} ({name})" if name else f"chapter {code}"


def _source_link(source: str) -> str:
    """``file:line`` of the experiment's code, linked to the file when it exists here."""
    if not source:
        return ""
    path = source.rsplit(":", 1)[0]
    root = pathlib.Path(__file__).resolve().parents[2]  # the folder holding tying/
    target = root / path
    text = f"code: <code>{_e(source)}</code>"
    if target.is_file():
        return f'<a class="source" href="{_e(target.as_uri())}">{text}</a>'
    return f'<span class="source">{text}</span>'


def summary_rows(records: Sequence[RunRecord], registered: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per claim and per registered experiment, in CLAIMS.md order.

    Args:
        records: the experiments that ran.
        registered: every registered experiment, id -> spec (anything with
            ``title`` and ``claim``).

    Returns:
        Dicts with ``id``, ``code``, ``claim``, ``status``, ``registered``, ``record``
        (the record of an experiment that ran, else None) and ``module`` (for status
        ``"import-failed"``: the experiment module that declares the claim but failed
        to import, else None).
    """
    by_id = {r.id: r for r in records}
    rows = []
    ids = [c.id for c in CLAIMS]
    ids += [i for i in list(registered) + list(by_id) if i not in ids]
    # an extra claim whose module failed to import is in no list above: it would vanish
    ids += [c.id for c in EXTRA_CLAIMS if failed_module(c.id) and c.id not in registered]
    for exp_id in dict.fromkeys(ids):
        claim: Claim | None = claim_for(exp_id)
        record = by_id.get(exp_id)
        spec = registered.get(exp_id)
        module = None
        if record is not None:
            status, sentence = record.status, record.claim
        elif spec is not None:
            status, sentence = "not-run", spec.claim
        else:
            # a claim whose module failed to import is implemented, but broken (stop 54)
            module = failed_module(exp_id)
            status = "import-failed" if module else "not-implemented"
            sentence = claim.claim if claim else ""
        rows.append(
            {
                "id": exp_id,
                "code": claim.code if claim else "",
                "claim": sentence,
                "status": status,
                "registered": spec is not None or record is not None,
                "record": record,
                "module": module,
            }
        )
    return rows


def _table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_e(format_value(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<h3>{_e(title)}</h3>" if title else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        rec: RunRecord | None = row["record"]
        link = f'<a href="#{_e(row["id"])}">{_e(row["id"])}</a>' if rec else _e(row["id"])
        thumb = ""
        if rec and rec.figures:
            thumb = (
                f'<a href="#{_e(row["id"])}"><img src="{_e(rec.figures[0])}" '
                f'alt="key figure of {_e(row["id"])}"></a>'
            )
        key = _e(rec.key_figure) if rec else ""
        if row.get("module"):
            key = (
                f'<a href="#import-errors">module tying.experiments.{_e(row["module"])} '
                "failed to import</a>"
            )
        runtime = format_runtime(rec.runtime_s) if rec else ""
        classes = (
            "claim-row"
            + (" experiment-row" if rec else "")
            + (" not-implemented" if row["status"] == "not-implemented" else "")
        )
        out.append(
            f'<tr class="{classes}" data-id="{_e(row["id"])}" data-status="{row["status"]}" '
            f'data-registered="{"1" if row["registered"] else "0"}">'
            f'<td class="code">{_e(row["code"])}</td><td class="id">{link}</td><td>{_e(row["claim"])}</td>'
            f"<td>{_badge(row['status'])}</td><td>{key}{thumb}</td>"
            f'<td class="num">{runtime}</td></tr>'
        )
    return (
        '<table class="summary" id="summary"><thead><tr><th>claim</th><th>id</th>'
        "<th>what it says</th><th>result</th><th>key figure</th><th>runtime</th></tr></thead>"
        f"<tbody>{''.join(out)}</tbody></table>"
    )


def _section(rec: RunRecord) -> str:
    claim = claim_for(rec.id)
    code = f"{claim.code} · " if claim else ""
    parts = [
        f'<section class="claim" id="{_e(rec.id)}" data-status="{rec.status}">',
        f"<h2>{_e(code)}{_e(rec.id)} — {_e(rec.title)} {_badge(rec.status)}</h2>",
        f'<div class="meta">{_e(_chapter_label(rec.chapter))} · size {_e(rec.size)} · '
        f"seed {rec.seed} · {format_runtime(rec.runtime_s)} · {rec.threads} thread(s)"
        f"{' · ' + _source_link(rec.source) if rec.source else ''}</div>",
        f'<p class="sentence">{_e(rec.claim)}</p>',
    ]
    if claim:
        parts.append(f"<p><b>The check shows:</b> {_e(claim.shows)}</p>")
    if rec.notes:
        parts.append(f"<p>{_e(rec.notes)}</p>")
    if rec.measured:
        parts.append(
            _table(
                "Measured (these numbers decided the check)",
                ["quantity", "value"],
                [{"quantity": k, "value": v} for k, v in rec.measured.items()],
            )
        )
    for path in rec.figures:
        parts.append(
            f'<figure><img src="{_e(path)}" alt="figure for {_e(rec.id)}">'
            f"<figcaption>{_e(path)}</figcaption></figure>"
        )
    for table in rec.tables:
        parts.append(_table(table.title, table.columns, table.rows))
    if rec.error:
        if rec.status == "missing-extra":
            label = "Missing optional extra"
        elif "Traceback (most recent call last)" in rec.error:
            label = "The experiment raised"
        else:  # it finished, but its result is no verdict (a NaN, a non-bool check)
            label = "Why this run gives no verdict"
        parts.append(f'<h3>{label}</h3><pre class="error">{_e(rec.error)}</pre>')
    parts.append("</section>")
    return "\n".join(parts)


def render_page(
    records: Sequence[RunRecord],
    registered: dict[str, Any],
    environment: dict[str, Any],
    runtime_s: float,
    import_errors: dict[str, str] | None = None,
) -> str:
    """The whole report page as one HTML string.

    Args:
        records: the experiments that ran.
        registered: every registered experiment, id -> spec.
        environment: from :func:`tying.report.environment.collect_environment`.
        runtime_s: wall time of the whole run.
        import_errors: experiment modules that failed to import, name -> message.

    Returns:
        The page.

    Raises:
        TypeError, ValueError: ``records`` is not a list of :class:`RunRecord` or holds a
            status no run gives (as :func:`tying.report.write_report`, named).
    """
    from tying.report import _check_records  # the package imports this module

    # one record, a generator, a dict entry or status 'weird' said "no len()", "no
    # attribute 'id'" or KeyError: 'weird', as write_report did before stop 60
    records = _check_records(records, "render_page")
    rows = summary_rows(records, registered)
    n_pass = sum(r.passed for r in records)
    missing = sum(row["status"] == "not-implemented" for row in rows)
    totals = (
        f'<div class="totals"><span id="passed-count"><b>{n_pass}</b> of {len(records)} '
        f"claims passed</span><span>{len(registered)} experiments registered</span>"
        f"<span>{missing} claims not yet implemented</span>"
        f"<span>total runtime {format_runtime(runtime_s)}</span>"
        # a module that failed to import registered nothing: its claims are not counted
        + (
            f'<span class="broken" id="import-error-count"><a href="#import-errors">'
            f"{len(import_errors)} experiment module(s) failed to import</a>; their claims "
            "did not run</span>"
            if import_errors
            else ""
        )
        + "</div>"
    )
    broken = ""
    if import_errors:
        items = "".join(
            f'<h3>{_e(k)}</h3><pre class="error">{_e(v)}</pre>' for k, v in import_errors.items()
        )
        broken = (
            '<section class="claim" id="import-errors"><h2>Experiment modules that '
            f"failed to import</h2>{items}</section>"
        )
    env_rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(format_value(v))}</td></tr>" for k, v in environment.items()
    )
    order = {row["id"]: i for i, row in enumerate(rows)}
    sections = "\n".join(_section(r) for r in sorted(records, key=lambda r: order[r.id]))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tying — experiment report</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>Parameter tying: the claims, measured</h1>
<p class="lede">Every claim of CLAIMS.md, each with the experiment that checks it on data it
makes itself. Size <b>{_e(environment.get("size", ""))}</b>, seed
<b>{_e(environment.get("seed", ""))}</b>.</p>
{totals}
{_summary(rows)}
{broken}
{sections}
<h2 id="environment">Environment</h2>
<table class="env">{env_rows}</table>
<footer>Written by <code>tying report</code>; machine-readable results in
<a href="results.json">results.json</a>.</footer>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
