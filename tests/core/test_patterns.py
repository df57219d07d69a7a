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
