"""Every option of the ``tying`` command, swept with bad values.

The sweep enumerates the argparse parser, so an option added later without a bad
value here fails :func:`test_every_option_of_the_parser_is_swept`. Each bad value must
exit 2, name the option and the value, run no experiment and leave the folder (with
an earlier report in it) byte for byte as it was.

Defects it found: ``--out ""`` wrote a whole report into the current folder
(``Path("")`` is ``.``); ``--seed 1_0`` ran seed 10 and ``--seed ٣`` seed 3, and
``--jobs 1_0`` ten workers (Python's ``int`` takes underscores and other scripts'
digits), so the page stated a seed the user never typed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.cli import _jobs, _parser, _seed, main
from tying.experiments import Result
from tying.experiments.registry import MAX_SEED

EXIT_USAGE = 2
OK, NEVER = "cli42-ok", "cli42-never"

# (command, option) -> [(argv, text the error must hold)]. ``{out}`` is a folder holding
# an earlier report, ``{file}`` a user's file, ``{user}`` a folder with a user's file.
BAD: dict[tuple[str, str], list[tuple[list[str], str]]] = {
    ("", "COMMAND"): [(["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'")],
    ("", "--verbose"): [(["--verbose=3", "list"], "--verbose: ignored explicit argument '3'")],
    ("run", "id"): [(["run", "no-such-idd"], "unknown experiment id 'no-such-idd'")],
    ("run", "--size"): [
        (["run", NEVER, "--size", "medium"], "--size: invalid choice: 'medium'"),
    ],
    ("run", "--seed"): [
        (["run", NEVER, "--seed", "1_0"], "--seed: expected an integer in 0..4294967295 (digits"),
        (["run", NEVER, "--seed", "\u0663"], "--seed: expected an integer in 0..4294967295"),
        (["run", NEVER, "--seed", str(MAX_SEED + 1)], f"got {MAX_SEED + 1}; pick a smaller"),
    ],
    ("run", "--out"): [
        (["run", NEVER, "--out", ""], "--out: expected a folder path, got ''"),
        (["run", NEVER, "--out", "{file}"], "is a file, not a folder"),
        (["run", NEVER, "--out", "{user}"], "notes.txt, which was not written by tying"),
    ],
    ("run", "--timeout"): [  # stop 56: the same option as report's
        (["run", NEVER, "--timeout", "0"], "--timeout: expected a number of seconds > 0, got 0"),
        (["run", NEVER, "--timeout", "-1"], "(digits 0-9 only), got '-1'"),
        (["run", NEVER, "--timeout", "ten"], "got 'ten'"),
        (["run", NEVER, "--timeout", "inf"], "got 'inf'"),
    ],
    ("report", "--size"): [
        (["report", "--only", NEVER, "--size", "Quick"], "--size: invalid choice: 'Quick'"),
    ],
    ("report", "--seed"): [
        (["report", "--only", NEVER, "--seed", "1_0"], "--seed: expected an integer in 0..42"),
        (["report", "--only", NEVER, "--seed", "0x10"], "got '0x10'"),
        (["report", "--only", NEVER, "--seed", "-1"], "got -1; seeds are not negative"),
    ],
    ("report", "--only"): [
        (["report", "--only", "a,,b"], "--only 'a,,b' has an empty id"),
        (["report", "--only", "no-such-idd"], "--only: unknown experiment id 'no-such-idd'"),
    ],
    ("report", "--jobs"): [
        (["report", "--only", NEVER, "--jobs", "0"], "--jobs: expected a whole number >= 1"),
        (["report", "--only", NEVER, "--jobs", "-2"], "got -2; use --jobs 1"),
        (["report", "--only", NEVER, "--jobs", "1.5"], "--jobs: expected a whole number"),
        (["report", "--only", NEVER, "--jobs", "two"], "got 'two'"),
        (["report", "--only", NEVER, "--jobs", "1_0"], "(digits 0-9 only), got '1_0'"),
        (["report", "--only", NEVER, "--jobs", ""], "got ''"),
    ],
    ("report", "--timeout"): [  # stop 55
        (["report", "--only", NEVER, "--timeout", "0"], "--timeout: expected a number of seconds"),
        (["report", "--only", NEVER, "--timeout", "-1"], "(digits 0-9 only), got '-1'"),
        (["report", "--only", NEVER, "--timeout", "inf"], "got 'inf'"),
        (["report", "--only", NEVER, "--timeout", ""], "got ''"),
    ],
    ("report", "--out"): [
        (["report", "--only", NEVER, "--out", ""], "--out: expected a folder path, got ''"),
        (["report", "--only", NEVER, "--out", "  "], "got '  ': an empty or blank name"),
        (["report", "--only", NEVER, "--out", "a\x00b"], "holds a NUL character"),
        (["report", "--only", NEVER, "--out", "{file}"], "is a file, not a folder"),
        (["report", "--only", NEVER, "--out", "{user}"], "notes.txt, which was not written"),
    ],
}
CASES = [(key, argv, text) for key, cases in BAD.items() for argv, text in cases]


def _options(parser: argparse.ArgumentParser, command: str = "") -> set[tuple[str, str]]:
    """(command, option) for every argument of the parser and its subcommands."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            found.add((command, action.metavar or action.dest))
            for name, sub in action.choices.items():
                found |= _options(sub, name)
            continue
        found.add((command, action.option_strings[-1] if action.option_strings else action.dest))
    return found


def test_every_option_of_the_parser_is_swept():
    options = _options(_parser())
    assert options - set(BAD) == set(), "add bad values for these options to BAD"
    assert set(BAD) - options == set(), "BAD names options the parser no longer has"


def _snapshot(root: pathlib.Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("key", "argv", "text"), CASES, ids=[" ".join(c[1]) for c in CASES])
def test_a_bad_value_exits_2_names_it_and_changes_nothing(
    key, argv, text, register, tmp_path, monkeypatch, capsys
):
    calls = []
    register(OK, lambda size, seed: Result(passed=True, measured={"x": 1}))
    register(
        NEVER, lambda size, seed: calls.append(seed) or Result(passed=True, measured={"x": 1.0})
    )
    monkeypatch.chdir(tmp_path)  # an empty --out would mean this folder
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0
    (tmp_path / "file.txt").write_text("a user's file")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    names = {
        "{out}": str(out),
        "{file}": str(tmp_path / "file.txt"),
        "{user}": str(tmp_path / "user"),
    }
    argv = [names.get(a, a) for a in argv]
    if argv[0] == "report" and "--out" not in argv:
        argv += ["--out", str(out)]
    before = _snapshot(tmp_path)
    capsys.readouterr()

    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert text in err
    assert key[1] in err or key[1] in ("id", "COMMAND")  # the option is named
    assert calls == []  # checked before any experiment runs
    assert _snapshot(tmp_path) == before  # the earlier report and the user's files as they were


def test_an_empty_out_does_not_write_a_report_into_the_current_folder(
    register, tmp_path, monkeypatch, capsys
):
    # the old code took Path("") for "." and wrote index.html, results.json, figures/ here
    register(OK, lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--size", "quick", "--only", OK, "--out", ""]) == EXIT_USAGE
    assert os.listdir(tmp_path) == []
    assert "an empty or blank name" in capsys.readouterr().err


@settings(derandomize=True, deadline=None, max_examples=200)
@given(
    st.one_of(
        st.integers(-3, 2**33).map(str),
        st.text(alphabet="0123456789_ +-.xe\u0663\u00b2\u0966", min_size=0, max_size=6),
    )
)
def test_seed_and_jobs_take_exactly_the_digits_a_person_types(text):
    # reference: an optional sign and ASCII digits, nothing else; the value is that number
    plain = text.lstrip("+-")[:1].isdigit() and all(c in "0123456789" for c in text.lstrip("+-"))
    plain = plain and text.count("+") + text.count("-") <= 1 and text[:1] in "+-0123456789"
    for parse, low, high in ((_seed, 0, MAX_SEED), (_jobs, 1, None)):
        expected = int(text) if plain else None
        if expected is not None and (expected < low or (high is not None and expected > high)):
            expected = None
        try:
            got = parse(text)
        except argparse.ArgumentTypeError as exc:
            assert expected is None, (text, str(exc))
            assert repr(text) in str(exc) or text in str(exc)
        else:
            assert got == expected, (text, got)


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield action


def test_every_help_text_states_the_default_the_option_has():
    checked = 0
    for action in _actions(_parser()):
        match = re.search(r"\(default: ([^)]*)\)", action.help or "")
        if match:
            assert match.group(1) == str(action.default), action.option_strings
            checked += 1
    assert checked >= 6  # --size, --seed (run, report), --jobs, --out (report)


def test_ctrl_c_while_the_page_is_written_says_what_is_left(
    register, tmp_path, monkeypatch, capsys
):
    # the old code printed only "tying report: interrupted": silent that the earlier
    # report was removed at the start and that no page replaced it
    import tying.report

    out = tmp_path / "rep"
    register(OK, lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    real = tying.report.render_page
    monkeypatch.setattr(tying.report, "render_page", ctrl_c)
    capsys.readouterr()
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted while writing the page, all 1 experiment(s) done: no report page" in err
    # (stop 47: a run builds aside, so the earlier report is kept whole, not removed)
    assert "the earlier report there (index.html, results.json) is left as it was" in err
    assert sorted(os.listdir(out)) == [
        ".tying-report.json",
        "figures",
        "index.html",
        "results.json",
    ]
    monkeypatch.setattr(tying.report, "render_page", real)  # and the folder is still ours
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0
