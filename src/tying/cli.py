"""The ``tying`` command: list, run and report the experiments.

``tying list`` shows every claim and whether it has an experiment;
``tying run ID`` runs one and prints its tables; ``tying report`` runs many and
writes ``report/index.html``.

Exit codes: ``run``: 0 the claim's check passed, 1 it failed or the experiment
raised (or an extra it needs is missing, or it ran past ``--timeout``: its worker
process is stopped and it has no verdict), 2 usage error (an unknown id names the
closest valid one; a bad ``--seed`` or ``--timeout``; ``--out`` that is a file, cannot be written,
holds files tying did not write, or holds a report whose page shows a figure the run
would replace, or into which another ``tying report`` is writing now). ``report``: 0
when the page was written (whatever the verdicts), 1 when the experiments ran but the
page could not be written (a file appeared in ``--out`` meanwhile, say), 2 on usage
errors (also ``--only`` with an empty id,
``--jobs 0``, a ``--seed``/``--jobs`` that is not plain digits such as ``1_0``, an empty
``--out``, a ``--timeout`` that is not a positive number of seconds), all checked before
any experiment runs; an experiment that runs past ``--timeout`` is an error on the page
(``timed out after N s``), not the command's. Any command: 130 on Ctrl-C;
an interrupted or failed ``report`` writes no page and says so: it builds the new
report in a folder inside ``--out`` and moves it into place only when it is whole, so
an earlier report there is left as it was. ``list``: 0, 2 on usage errors. The output-folder
policy is in :mod:`tying.experiments.output`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import pathlib
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from tying.experiments import SIZES, get, load_all
from tying.experiments.claims import CLAIMS, EXTRA_CLAIMS, claim_for, in_claim_order
from tying.experiments.output import out_path
from tying.experiments.registry import MAX_SEED, failed_module
from tying.experiments.runner import (
    RunRecord,
    import_errors,
    run_experiment,
    run_many,
    workers_used,
)
from tying.report.format import format_runtime, format_value

__all__ = ["main"]

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: Ctrl-C: the shell's code for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
_STYLE = {
    "pass": "bold green",
    "fail": "bold red",
    "error": "bold red",
    "missing-extra": "bold yellow",
}


class _UsageError(Exception):
    """A bad argument found after parsing (an unknown id); exits with code 2."""


def _check_ids(
    ids: Sequence[str], option: str = "", run_args: argparse.Namespace | None = None
) -> list[str]:
    """The experiment ids of ``ids``, in order, once each; a claim's number (``A1``,
    ``b10``: CLAIMS.md's numbering, any case) stands for its experiment's id.
    ``run_args``: the ``tying run`` options, carried into the advice for ``a,b``."""
    load_all()
    out = []
    for given in ids:
        exp_id = _by_code(given)
        try:
            get(exp_id)
        except KeyError as exc:  # its message names the closest valid id
            if not option and "," in given:  # `tying run a,b`: its advice ran `a` alone
                raise _UsageError(_comma_ids_advice(given, run_args=run_args)) from None
            raise _UsageError(f"{option}{exc.args[0]}") from None
        out.append(exp_id)
    return list(dict.fromkeys(out))


def _comma_ids_advice(
    given: str, shown: str | None = None, run_args: argparse.Namespace | None = None
) -> str:
    """What ``tying run a,b`` should have been, checked so the advice works when followed.

    The ids are read as ``--only`` reads them (spaces around commas dropped, empty ones
    skipped); an unknown one is named first, with its closest valid id (the advice
    ``--only a,nope`` was itself refused), and one id alone is told ``tying run ID``
    (``--only a,`` was refused for its empty id). The ids are written joined by commas
    without spaces: ``--only a, b`` typed as shown is two arguments (stop 59 review).
    ``run_args``' ``--size``, ``--seed`` and ``--out`` are carried into the advice:
    ``tying report`` runs at ``--size report`` and seed 0 unless told (stop 60 review).
    """
    run_opts, report_opts = _carried_options(run_args)
    ids: dict[str, str] = {}  # experiment id -> the id or claim number as given
    typed = given if shown is None else shown  # `tying run a b` names 'a b' as typed
    for part in (p.strip() for p in given.split(",")):
        if not part:
            continue
        try:
            get(_by_code(part))
        except KeyError as exc:
            return f"one experiment id per run, got {typed!r}, and {exc.args[0]}"
        ids.setdefault(_by_code(part), part)
    parts = list(ids.values())
    if not parts:
        return f"no experiment id in {typed!r}; give one, such as tying run param-counts (`tying list` shows them)"
    if len(parts) == 1:
        return (
            f"one experiment id per run, got {typed!r}; run it with tying run {parts[0]}{run_opts}"
        )
    return (
        f"one experiment id per run, got {typed!r}; run several with "
        f"tying report --only {','.join(parts)}{report_opts} (or one `tying run ID` each)"
    )


def _carried_options(args: argparse.Namespace | None) -> tuple[str, str]:
    """The options of ``tying run`` as ``tying run`` and as ``tying report`` take them.

    ``tying run a1 b1 --seed 3`` was told ``tying report --only a1,b1``, which ran seed 0
    at ``--size report`` (minutes, where ``run`` defaults to ``quick``), stop 60 review.
    """
    if args is None:
        return "", ""
    opts = []
    if args.seed:
        opts.append(f"--seed {args.seed}")
    if args.out is not None:
        opts.append(f"--out {shlex.quote(str(args.out))}")
    run = ([f"--size {args.size}"] if args.size != "quick" else []) + opts
    report = [f"--size {args.size}", *opts]
    return "".join(f" {o}" for o in run), "".join(f" {o}" for o in report)


def _only_apart_advice(last: str, extra: Sequence[str]) -> str:
    """What ``tying report --only a1, b1`` (ids apart) should have been, checked so the
    advice works when followed (stop 60 review: it said "unrecognized arguments: b1")."""
    said = f"unrecognized arguments: {' '.join(extra)}"
    parts = [p.strip() for v in [last, *extra] for p in v.split(",")]
    parts = list(dict.fromkeys(p for p in parts if p))
    try:
        _check_ids(parts, "--only: ")
    except _UsageError as exc:
        return f"{said}; {exc}"
    return (
        f"{said}; --only takes one argument, ids joined by commas without spaces: "
        f"give --only {','.join(parts)}"
    )


def _by_code(given: str) -> str:
    """The experiment id of claim number ``given`` (``"A1"`` -> ``"param-counts"``), or
    ``given`` itself when it is no claim's number."""
    code = given.strip().upper()
    for claim in CLAIMS + EXTRA_CLAIMS:
        if claim.code.upper() == code:
            return claim.id
    return given


def _print_record(console: Console, rec: RunRecord, out: pathlib.Path | None = None) -> None:
    claim = claim_for(rec.id)
    code = f"{claim.code} " if claim else ""
    console.rule(f"[bold]{escape(code + rec.id)}[/] — {escape(rec.title)}")
    console.print(Text(rec.claim))
    if rec.source:
        console.print(
            f"[dim]code: {escape(rec.source)} · chapter {escape(rec.chapter)}[/]", highlight=False
        )
    for table in rec.tables:
        rt = RichTable(title=Text(table.title), title_justify="left", show_lines=False)
        for col in table.columns:
            values = [row.get(col) for row in table.rows if row.get(col) is not None]
            numeric = values and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            )
            rt.add_column(Text(col), overflow="fold", justify="right" if numeric else "left")
        for row in table.rows:
            rt.add_row(*(Text(format_value(row.get(c))) for c in table.columns))
        console.print(rt)
    if rec.measured:
        rt = RichTable(title="Measured (decides the check)", title_justify="left")
        rt.add_column("quantity")
        rt.add_column("value", justify="right")
        for k, v in rec.measured.items():
            rt.add_row(Text(k), Text(format_value(v)))
        console.print(rt)
    if rec.figures:  # where they are: "figures/x.png" is inside --out, not here (stop 61)
        shown = [str(out / f) if out is not None else f for f in rec.figures]
        console.print(Text("figures: " + ", ".join(shown)))
    if rec.error:
        console.print(Text(rec.error, style="red"), highlight=False)
    console.print(
        f"[{_STYLE[rec.status]}]{rec.status.upper()}[/]  {escape(rec.key_figure)}  "
        f"({format_runtime(rec.runtime_s)}, size {escape(rec.size)}, seed {rec.seed})"
    )


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    registry = load_all()
    table = RichTable(title="Claims and their experiments", title_justify="left")
    table.add_column("claim", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("title", overflow="fold", ratio=1)
    table.add_column("status", no_wrap=True)
    table.add_column("code (file:line)", no_wrap=True)
    known = {c.id for c in CLAIMS}
    for claim in CLAIMS:
        spec = registry.get(claim.id)
        module = failed_module(claim.id) if spec is None else None
        table.add_row(
            Text(claim.code),
            Text(claim.id),
            Text(claim.title),
            f"[red]import failed ({escape(module)})[/]" if module else _spec_status(spec),
            Text(spec.source if spec else ""),
        )
    for exp_id, spec in registry.items():
        if exp_id not in known:
            table.add_row("", Text(exp_id), Text(spec.title), _spec_status(spec), Text(spec.source))
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # piped (`tying list | grep ...`): rich drew the table 80 columns wide and cut the
        # claim, title and status columns to "…"; a file or pipe gets the whole rows
        wide = console.options.update_width(1000)
        console.width = max(console.width, Measurement.get(console, wide, table).maximum)
    console.print(table)
    _print_import_errors(console)
    return EXIT_PASS


def _spec_status(spec) -> str:
    if spec is None:
        return "[dim]not yet implemented[/]"
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"[yellow]needs {escape(', '.join(missing))}[/]"
    return "[green]ready[/]"


def _claim(out: pathlib.Path, ids: Sequence[str], *, fresh: bool) -> None:
    from tying.experiments.output import OutputFolderError, claim_folder

    try:
        claim_folder(out, ids, fresh=fresh)
    except OutputFolderError as exc:
        raise _UsageError(str(exc)) from None


@contextlib.contextmanager
def _locked(out: pathlib.Path | None) -> Iterator[None]:
    """Hold ``--out`` for this command (none: nothing to hold); a busy folder is a usage error."""
    from tying.experiments.output import OutputFolderError, folder_lock

    if out is None:
        yield
        return
    lock = folder_lock(out)
    try:
        lock.__enter__()
    except OutputFolderError as exc:
        raise _UsageError(str(exc)) from None
    with contextlib.ExitStack() as stack:
        stack.push(lock)
        yield


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    (exp_id,) = _check_ids([args.id], run_args=args)
    with _locked(args.out):  # a second run or report into --out is refused meanwhile
        return _run_one(args, console, exp_id)


def _run_one(args: argparse.Namespace, console: Console, exp_id: str) -> int:
    if args.out is not None:  # checked before the experiment runs
        _claim(args.out, [exp_id], fresh=False)
    from tying.experiments.output import OutputFolderError

    try:
        if args.timeout is None:  # in this process, as before --timeout existed
            rec = run_experiment(exp_id, size=args.size, seed=args.seed, out_dir=args.out)
        else:  # in a worker process, which can be stopped at the timeout (as for report)
            (rec,) = run_many(
                [exp_id], size=args.size, seed=args.seed, out_dir=args.out, timeout=args.timeout
            )
    except OutputFolderError as exc:  # --out changed while the experiment ran
        print(
            f"tying run: error: {exp_id} ran, but its figures could not be recorded: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAIL
    _print_record(console, rec, args.out)
    if args.out is None:
        console.print("[dim](figures not saved; pass --out DIR to keep them as PNG)[/]")
    return EXIT_PASS if rec.passed else EXIT_FAIL


def _split_ids(values: Sequence[str] | None) -> list[str] | None:
    """The ids of every ``--only`` value, in order, once each; an empty id is a usage error."""
    if values is None:
        return None
    ids = []
    for value in values:
        parts = [v.strip() for v in value.split(",")]
        if not all(parts):
            raise _UsageError(
                f"--only {value!r} has an empty id (nothing between commas); give "
                "comma-separated ids such as --only param-counts,bptt-sum (`tying list` shows them)"
            )
        ids += parts
    return list(dict.fromkeys(ids))


class _RunningColumn(ProgressColumn):
    """The experiments running now, each with its own elapsed time (redrawn live)."""

    def __init__(self, running: dict[str, float]) -> None:
        super().__init__()
        self.running = running

    def render(self, task) -> Text:
        now = time.perf_counter()
        return Text(", ".join(f"{i} {now - t:.0f}s" for i, t in list(self.running.items())))


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from tying.experiments.output import discard_build, install_build, start_build
    from tying.report import OutputFolderError, write_report

    # every argument is checked, and the folder claimed, before any experiment runs
    only = _split_ids(args.only)
    ids = _check_ids(only, "--only: ") if only is not None else in_claim_order(list(load_all()))
    out = pathlib.Path(args.out)
    with _locked(out):  # a second report or run into --out is refused meanwhile
        earlier = _earlier_report(out)
        try:  # the new report is built beside the earlier one, which stays until it is whole
            build = start_build(out, ids)
        except OutputFolderError as exc:
            raise _UsageError(str(exc)) from None
        try:
            return _build_report(
                args, console, ids, out, build, earlier, write_report, install_build
            )
        except KeyboardInterrupt:
            _say_interrupted("at the end", out, earlier, build)
            return EXIT_INTERRUPTED
        finally:
            discard_build(build)  # a no-op once the report was moved into place


def _build_report(args, console, ids, out, build, earlier, write_report, install_build) -> int:
    from tying.report import OutputFolderError

    t0 = time.perf_counter()
    running: dict[str, float] = {}
    finished: list[str] = []
    try:
        records = _run_with_progress(args, console, ids, build, running, finished)
    except KeyboardInterrupt:
        _say_interrupted(f"after {len(finished)} of {len(ids)} experiment(s)", out, earlier, build)
        return EXIT_INTERRUPTED
    except (OSError, OutputFolderError) as exc:  # the build folder changed under the run
        return _say_unwritten(exc, earlier)
    runtime = time.perf_counter() - t0
    jobs = workers_used(args.jobs, len(ids))  # what ran, not what was asked (stop 54)
    try:
        write_report(records, build, size=args.size, seed=args.seed, jobs=jobs, runtime_s=runtime)
        install_build(build, out)
    except KeyboardInterrupt:  # the page is moved in whole or not at all
        _say_interrupted(
            f"while writing the page, all {len(ids)} experiment(s) done", out, earlier, build
        )
        return EXIT_INTERRUPTED
    except (OSError, OutputFolderError) as exc:  # the folder changed during the run
        return _say_unwritten(exc, earlier)
    n_pass = sum(r.passed for r in records)
    console.print(
        f"[bold]{n_pass} of {len(records)} claims passed[/] in {format_runtime(runtime)} "
        f"(size {args.size}, {_jobs_said(jobs, args.jobs)}); "
        f"report: {escape(str(out / 'index.html'))}",
        highlight=False,
    )
    for rec in records:
        if not rec.passed:
            console.print(
                f"  [{_STYLE[rec.status]}]{rec.status}[/]: {escape(rec.id)}", highlight=False
            )
    _print_import_errors(console)  # their claims did not run: the count above omits them
    return EXIT_PASS


def _jobs_said(ran: int, asked: int) -> str:
    """``"2 job(s)"``, and the ``--jobs`` asked for when fewer ran."""
    return f"{ran} job(s)" + (f", of --jobs {asked}" if ran != asked else "")


def _say_unwritten(exc: Exception, earlier: list[str]) -> int:
    """The experiments ran but the page could not be written (the folder changed): exit 1."""
    kept = " (the earlier report there is left as it was)" if earlier else ""
    print(
        f"tying report: error: the experiments ran, but the page could not be written: {exc}{kept}",
        file=sys.stderr,
    )
    return EXIT_FAIL


def _say_interrupted(when: str, out: pathlib.Path, earlier: list[str], build: pathlib.Path) -> None:
    """What an interrupted ``tying report`` left in ``out``, on stderr."""
    if not build.exists():  # a Ctrl-C held while the report moved in: it is there, whole
        print(
            f"tying report: interrupted {when}: the new report was written in {out} just before",
            file=sys.stderr,
        )
        return
    kept = f"; the earlier report there ({', '.join(earlier)}) is left as it was" if earlier else ""
    print(
        f"tying report: interrupted {when}: no report page was written in {out}{kept}. "
        "Run the same command again for a report",
        file=sys.stderr,
    )


def _print_import_errors(console: Console) -> None:
    for module, err in import_errors().items():
        last = err.splitlines()[-1] if err.strip() else "(no message)"
        console.print(
            f"[red]experiment module {escape(module)} failed to import:[/] {escape(last)}",
            highlight=False,
        )


def _earlier_report(out: pathlib.Path) -> list[str]:
    """The page files of a report already in ``out`` (unreadable: none; _claim says why)."""
    try:
        return [n for n in ("index.html", "results.json") if (out / n).is_file()]
    except OSError:
        return []


def _run_with_progress(
    args: argparse.Namespace,
    console: Console,
    ids: list[str],
    out: pathlib.Path,
    running: dict[str, float],
    finished: list[str],
) -> list[RunRecord]:
    """:func:`run_many` under a live progress bar; ``finished`` collects the ids done."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _RunningColumn(running),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"report ({args.size})", total=len(ids))

        def on_start(exp_id: str) -> None:
            running[exp_id] = time.perf_counter()

        def on_done(rec: RunRecord) -> None:
            running.pop(rec.id, None)
            progress.console.print(
                f"  [{_STYLE[rec.status]}]{rec.status.upper():>5}[/] {escape(rec.id)}  "
                f"[dim]{format_runtime(rec.runtime_s)}[/]  {escape(rec.key_figure)}",
                highlight=False,
            )
            progress.update(task, advance=1)
            finished.append(rec.id)

        return run_many(
            ids,
            size=args.size,
            seed=args.seed,
            out_dir=out,
            jobs=args.jobs,
            on_start=on_start,
            on_done=on_done,
            timeout=args.timeout,
        )


_SEED_HELP = f"seed, an integer in 0..{MAX_SEED} (default: 0)"


#: A whole number as a person types it: ASCII digits, an optional sign. Python's int()
#: also takes "1_0" (10), " 5 " and other scripts' digits ("٣" is 3): a typo there would
#: run, and the page state, a seed or job count the user never typed.
_WHOLE = re.compile(r"[+-]?[0-9]+")


def _whole(text: str) -> int | None:
    return int(text) if _WHOLE.fullmatch(text) else None


def _seed(text: str) -> int:
    value = _whole(text)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected an integer in 0..{MAX_SEED} (digits 0-9 only), got {text!r}"
        )
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected an integer in 0..{MAX_SEED}, got {text}; "
            f"{'seeds are not negative' if value < 0 else 'pick a smaller seed'}"
        )
    return value


def _jobs(text: str) -> int:
    value = _whole(text)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 (digits 0-9 only), got {text!r}"
        )
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 (worker processes), got {value}; use --jobs 1 to run "
            "in this process"
        )
    return value


#: Seconds as a person types them: ASCII digits, an optional decimal part (".5" and "5."
#: too: both were refused, stop 58).
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _timeout(text: str) -> float:
    """``--timeout``: seconds one experiment may run, a positive number."""
    if not _SECONDS.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0 such as 600 or 1.5 (digits 0-9 only), got {text!r}"
        )
    value = float(text)
    if value <= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {text}; leave --timeout out for no limit"
        )
    return value


def _folder(text: str) -> pathlib.Path:
    """``--out``: a folder path; an empty one is refused (``Path("")`` is the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a folder path, got {text!r}: an empty or blank name is most likely an "
            "unset variable (an empty path means the current folder); give a folder such as "
            "--out report (it is created if missing)"
        )
    if "\x00" in text:
        raise argparse.ArgumentTypeError(
            f"expected a folder path, got {text!r}, which holds a NUL character no file system "
            "accepts; give a folder such as --out report"
        )
    # a shell expands "~" in `--out ~/report`, not in `--out=~/report`: that one wrote the
    # report into a folder named "~" here and printed "~/report/index.html" (stop 62)
    return out_path(text)


def _add_timeout(p: argparse.ArgumentParser, then: str) -> None:
    """``--timeout``, the same option for ``run`` and ``report``; ``then`` ends its help's
    first sentence."""
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=None,
        metavar="SECONDS",
        help=(
            "seconds one experiment may run; one that runs longer is reported as an error "
            f"('timed out after N s'){then}. Left out: no limit"
        ),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tying",
        description="Run the experiments that check the claims of CLAIMS.md.",
        epilog=(
            "exit codes: 0 pass / page written, 1 claim failed or raised (or the page could "
            "not be written), 2 usage error, 130 interrupted"
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or everything (-vv)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list claims, experiment ids and their status")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser("run", help="run one experiment and print its tables")
    p.add_argument("id", help="experiment id (e.g. param-counts) or claim number (e.g. A1)")
    p.add_argument(
        "--size",
        choices=SIZES,
        default="quick",
        help="quick: seconds; report: the report's size (default: quick)",
    )
    p.add_argument("--seed", type=_seed, default=0, help=_SEED_HELP)
    p.add_argument(
        "--out",
        type=_folder,
        default=None,
        help="folder to save its figures in (under figures/)",
    )
    _add_timeout(p, ", exit code 1. With it the experiment runs in a worker process")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("report", help="run experiments and write the HTML report")
    p.add_argument(
        "--size", choices=SIZES, default="report", help="experiment size (default: report)"
    )
    p.add_argument("--seed", type=_seed, default=0, help=_SEED_HELP)
    p.add_argument(
        "--only",
        action="append",
        metavar="IDS",
        help="comma-separated experiment ids or claim numbers to run (repeatable); default: all",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        help="worker processes; each uses one torch thread (default: 1)",
    )
    _add_timeout(
        p,
        " and the others go on. Experiments then run in worker processes, also with --jobs 1",
    )
    p.add_argument(
        "--out",
        type=_folder,
        default="report",
        help="report folder, created if missing (default: report)",
    )
    p.set_defaults(fn=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tying`` console script.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docstring).
    """
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "run" and not any(e.startswith("-") for e in extra):
            # `tying run a1 a2` said only "unrecognized arguments: a2" (stop 60)
            typed = " ".join([args.id, *extra])
            load_all()  # the advice checks each id
            advice = _comma_ids_advice(",".join([args.id, *extra]), shown=typed, run_args=args)
            print(f"tying run: error: {advice}", file=sys.stderr)
            return EXIT_USAGE
        if (
            extra
            and args.command == "report"
            and args.only
            and not any(e.startswith("-") for e in extra)
        ):
            # `--only a1, b1` (or `--only a1 b1`) said only "unrecognized arguments: b1"
            print(
                f"tying report: error: {_only_apart_advice(args.only[-1], extra)}", file=sys.stderr
            )
            return EXIT_USAGE
        if extra:
            args = parser.parse_args(argv)  # argparse's own message and exit code
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    console = Console(highlight=False)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    try:
        with _sigterm_interrupts():
            return args.fn(args, console)
    except _UsageError as exc:
        print(f"tying {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # `tying report` says what it left; here: nothing to say
        print(f"tying {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, a CI timeout, a closing terminal) ends a command as Ctrl-C does.

    Python's default for SIGTERM ends the process at once: no ``finally`` ran, so a
    ``tying report`` left its build folder and its worker processes behind. Here it
    raises :class:`KeyboardInterrupt`, and the command says what it left and exits 130.
    """

    def interrupt(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise KeyboardInterrupt("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
