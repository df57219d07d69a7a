"""Stop 50: SMILES lists are read as UTF-8 whatever the locale, a byte-order mark dropped.

``load_molecule_set`` read its file in the locale's encoding: under ``LC_ALL=C`` a UTF-8
name (``α-pinene``) was a bare ``UnicodeDecodeError`` naming neither file nor line,
under a Latin-1 code page the same bytes became other names without a word, a file's
byte-order mark hid its first ``#`` comment, and ``str.splitlines`` split one line of
the file at U+2028 or U+0085, so a valid line was refused and later ones misnumbered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("rdkit")

from tying.chem import load_molecule_set  # noqa: E402

NAMES = "# α-pinene and friends\nCC1=CCC2CC1C2(C)C\tα-pinene\r\nCCO\téthanol\nC\tmethane\n"


def test_a_utf8_file_reads_the_same_under_an_ascii_locale(tmp_path):
    path = tmp_path / "names.smi"
    path.write_bytes(b"\xef\xbb\xbf" + NAMES.encode("utf-8"))
    code = (
        "import json, locale, sys\n"
        "from tying.chem import load_molecule_set\n"
        "print(json.dumps([locale.getpreferredencoding(False), load_molecule_set(sys.argv[1])]))"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    encoding, molecules = json.loads(done.stdout)
    assert encoding.lower().replace("-", "") != "utf8", encoding  # the locale is really not UTF-8
    expected = [
        ["CC1=CCC2CC1C2(C)C", "α-pinene"],
        ["CCO", "éthanol"],
        ["C", "methane"],
    ]
    assert molecules == expected
    assert [list(m) for m in load_molecule_set(path)] == expected  # and here, in this locale


def test_a_byte_order_mark_does_not_hide_the_first_comment(tmp_path):
    path = tmp_path / "bom.smi"
    path.write_bytes(b"\xef\xbb\xbf# made in Notepad\nCCO\tethanol\n")
    assert load_molecule_set(path) == [("CCO", "ethanol")]
    path.write_bytes(b"\xef\xbb\xbfCCO\tethanol\n")  # nor sticks to the first SMILES
    assert load_molecule_set(path) == [("CCO", "ethanol")]


def test_bytes_that_are_not_utf8_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "latin1.smi"
    path.write_bytes("CCO\tethanol\n# comment\nCC\téthane\n".encode("latin-1"))
    with pytest.raises(
        ValueError,
        match=r"latin1\.smi:3:4: b'\\xe9' is not UTF-8 .* in line b'CC\\t\\xe9thane'; .*"
        r"re-save the file as UTF-8",
    ):
        load_molecule_set(path)


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x0c", "\x1e"])
def test_lines_end_at_newlines_only(tmp_path, separator):
    # str.splitlines broke the first line at these, so "tail" was refused as a line
    # without a name (and every later line's number was one too high).
    path = tmp_path / "odd.smi"
    path.write_text(f"CCO\tethanol{separator}tail\nCC\tethane\nbad line\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.smi:3: expected 'SMILES<TAB>name', got 'bad"):
        load_molecule_set(path)
    path.write_text(f"CCO\tethanol{separator}tail\nCC\tethane\n", encoding="utf-8")
    assert load_molecule_set(path) == [("CCO", f"ethanol{separator}tail"), ("CC", "ethane")]


def test_every_newline_convention_ends_a_line(tmp_path):
    # Windows (\r\n) and classic Mac OS (\r) files are read as text mode reads them.
    path = tmp_path / "endings.smi"
    path.write_bytes(b"CCO\tethanol\r\nCC\tethane\rC\tmethane\nbad\r")
    with pytest.raises(ValueError, match=r"endings\.smi:4: expected 'SMILES<TAB>name', got 'bad'"):
        load_molecule_set(path)
    path.write_bytes(b"CCO\tethanol\r\nCC\tethane\rC\tmethane\n")
    assert load_molecule_set(path) == [("CCO", "ethanol"), ("CC", "ethane"), ("C", "methane")]
    path.write_bytes(b"CCO\tethanol\rCC\t\xe9thane\r")
    with pytest.raises(ValueError, match=r"endings\.smi:2:4: b'\\xe9' is not UTF-8"):
        load_molecule_set(path)


def test_a_path_of_the_wrong_type_is_refused_by_name():
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int"):
        load_molecule_set(3)


@pytest.mark.parametrize(
    ("line", "held"),
    [
        ("CCO ethanol\tfrom a space-separated list", r"' ' \(U\+0020\) at position 3"),
        ("CC\u200bO\tethanol", r"'\\u200b' \(U\+200B\) at position 2"),
        ("CCO\x07\tethanol", r"'\\x07' \(U\+0007\) at position 3"),
    ],
)
def test_a_smiles_field_that_is_no_smiles_names_its_line(tmp_path, line, held):
    # Returned as it was, the SMILES was refused later by assign, which names the SMILES
    # only, not where in the file it came from.
    path = tmp_path / "fields.smi"
    path.write_text(f"C\tmethane\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"fields\.smi:2: the SMILES field .* holds {held}"):
        load_molecule_set(path)


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "unicode.smi"
    path.write_text("CCO\tethanol\n", encoding="utf-16")  # Notepad's "Unicode"
    with pytest.raises(
        ValueError, match=r"unicode\.smi:1:1: .*UTF-16 byte-order mark; .*iconv -f utf-16"
    ):
        load_molecule_set(path)
