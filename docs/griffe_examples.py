"""Griffe extension: a Google-style ``Example:`` section is an examples section.

The code base writes ``Example:`` (singular, STYLE rule 3); griffe reads that
as an admonition and renders its ``>>>`` lines as Markdown, where
``ff["Bonds"]["b1"]`` looks like a reference link. Renaming the section
header at load time keeps the docstrings as they are and renders them as code.
"""

from __future__ import annotations

import re

import griffe

HEADER = re.compile(r"^(\s*)Example:\s*$", flags=re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **_: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = HEADER.sub(r"\1Examples:", obj.docstring.value)
