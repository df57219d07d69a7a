"""Glob patterns on dotted paths, with captures for pairing.

``*`` matches one path segment, or one or more characters inside one (``layers.1*``
matches ``layers.10`` but not ``layers.1``, unlike ``fnmatch``); ``**`` matches one or more
characters, dots included (``a.**`` matches ``a.b.c``, not ``a``). Every other character,
``?`` and ``[`` included, is literal, and a pattern matches the whole path.
Each wildcard captures what it matched, so ``dec.*.weight`` can be paired with
``enc.*.weight``: the source path is the ``like`` pattern with its wildcards
replaced, in order, by the target's captures.

Example:
    >>> from tying.core.patterns import Pattern
    >>> p = Pattern("dec.*.weight")
    >>> p.match("dec.3.weight")
    ('3',)
    >>> Pattern("enc.*.weight").substitute(("3",))
    'enc.3.weight'
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\*\*|\*")


class Pattern:
    """A compiled glob over dotted paths."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise TypeError(f"a pattern must be a non-empty str, got {text!r}")
        self.text = text
        parts = _TOKEN.split(text)
        self.wildcards = _TOKEN.findall(text)
        regex = ""
        for i, part in enumerate(parts):
            regex += re.escape(part)
            if i < len(self.wildcards):
                regex += "(.+)" if self.wildcards[i] == "**" else "([^.]+)"
        self._regex = re.compile(regex + r"\Z")

    def match(self, path: str) -> tuple[str, ...] | None:
        """The captures when ``path`` matches the whole pattern, else None."""
        m = self._regex.match(path)
        return None if m is None else m.groups()

    def substitute(self, captures: tuple[str, ...]) -> str:
        """This pattern with its wildcards replaced by ``captures`` (in order)."""
        if len(captures) != len(self.wildcards):
            raise ValueError(
                f"pattern {self.text!r} has {len(self.wildcards)} wildcard(s), got {len(captures)} capture(s)"
            )
        it = iter(captures)
        return _TOKEN.sub(lambda _m: next(it), self.text)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
