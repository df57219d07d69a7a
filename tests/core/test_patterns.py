import pytest

from tying.core.patterns import Pattern


@pytest.mark.parametrize(
    "pattern,path,captures",
    [
        ("a.*.w", "a.3.w", ("3",)),
        ("a.*.w", "a.3.4.w", None),
        ("a.**.w", "a.3.4.w", ("3.4",)),
        ("*.weight", "fc.weight", ("fc",)),
        ("layers.*", "layers.10", ("10",)),
        ("layers.*", "layers", None),
        ("x.y", "x.y", ()),
        ("x.y", "xzy", None),  # dots are literal, not regex wildcards
    ],
)
def test_match(pattern, path, captures):
    assert Pattern(pattern).match(path) == captures


def test_substitute_in_order_and_counts_checked():
    assert Pattern("enc.*.up.*").substitute(("1", "2")) == "enc.1.up.2"
    with pytest.raises(ValueError, match="has 2 wildcard"):
        Pattern("enc.*.up.*").substitute(("1",))


def test_empty_pattern_is_rejected():
    with pytest.raises(TypeError, match="non-empty str"):
        Pattern("")


# stop 35: what each wildcard promises (docs/core.md, "What patterns match"), pinned as a table.
# `*` stays within one segment and needs at least one character (unlike fnmatch);
# `**` takes one or more characters, dots included; everything else is literal.
@pytest.mark.parametrize(
    "pattern,path,captures",
    [
        ("layers.*", "layers.0", ("0",)),
        ("layers.*", "layers.0.weight", None),  # anchored at both ends
        ("layers.1*", "layers.10", ("0",)),
        ("layers.1*", "layers.1", None),  # at least one character
        ("*_proj.weight", "q_proj.weight", ("q",)),
        ("*_proj.weight", "_proj.weight", None),
        ("norm*", "norm", None),
        ("norm*", "norm1", ("1",)),
        ("*.*", "a.b", ("a", "b")),
        ("*.*", "a.b.c", None),
        ("**", "a.b.c", ("a.b.c",)),
        ("a.**", "a", None),  # at least one segment
        ("a.**.w", "a.w", None),
        ("**.w", "x.y.w", ("x.y",)),
        ("**_proj.weight", "blocks.0.q_proj.weight", ("blocks.0.q",)),  # dots included
        ("a?", "ab", None),  # '?' is literal
        ("a?", "a?", ()),
        ("a[bc]", "ab", None),  # '[...]' is literal
        ("a[bc]", "a[bc]", ()),
        ("blocks.0", "xblocks.0", None),  # anchored at the start
        ("blocks.0", "blocks.00", None),  # and at the end
    ],
)
def test_what_each_wildcard_matches(pattern, path, captures):
    assert Pattern(pattern).match(path) == captures
