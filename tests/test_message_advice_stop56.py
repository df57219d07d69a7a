"""Every error/warning message's advice names a real API.

A message's fix is often code: ``use tying.Plan([...]).apply(model)``,
``td.fully_shard(model, units=[...])``, ``pass n_data=len(dataset)``. Advice that names a
function, attribute or keyword argument that does not exist fails when followed, so this
test reads every ``raise X(...)`` and ``warnings.warn(...)`` message in ``src/tying`` with
``ast`` (string constants and the literal parts of f-strings; formatted parts are cut out,
so a reference is never guessed across one), extracts the dotted references that start
with ``tying.`` (or ``td.`` = ``tying.distributed``), and checks that each resolves, read
from the source (modules, the lazy ``_WHERE`` re-exports, class members and bases): where
the reference is called with keywords, each keyword must be a parameter of the callee (its
``def``, or a class's ``__init__`` / dataclass fields; a ``**kwargs`` callee accepts
anything); where the call's result is used (``tying.Plan([...]).apply``), the attribute
must exist on the class; and ``pass name=`` advice in a message that names exactly one
``tying`` callable must be a parameter of that callable.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import tying

SRC = Path(tying.__file__).resolve().parent

# A formatted (f-string) part: no reference is read across it.
_HOLE = "\x00"

# A reference starts at ``tying.`` or ``td.`` not preceded by an identifier char, a dot,
# a slash (``src/tying.py``) or a hyphen (``pip install tying.x``).
_REF = re.compile(r"(?<![\w./\-])(tying|td)((?:\.[A-Za-z_]\w*)+)")
_KW = re.compile(r"(?<![\w.=!<>])([A-Za-z_]\w*)\s*=(?!=)")
_PASS = re.compile(r"\bpass\s+([A-Za-z_]\w*)\s*=(?!=)")

# Text that matches the reference pattern but is not an API reference. Each entry: the
# exact reference text, and why it is not checked.
ALLOW: dict[str, str] = {}  # empty at stop 56: the one false-positive kind (quoted
# file keys such as 'tying.format') is skipped by rule in check(), not by name


@dataclass(frozen=True)
class Message:
    file: str
    line: int
    text: str


def _literal(node: ast.AST) -> str:
    """The literal text of a message expression; formatted parts become ``_HOLE``."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else _HOLE
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal(v) if isinstance(v, ast.Constant) else _HOLE for v in node.values)
    if isinstance(node, ast.BinOp):  # "a" + "b", "..." % x
        left = _literal(node.left)
        return left + (_literal(node.right) if isinstance(node.op, ast.Add) else _HOLE)
    if isinstance(node, ast.Call):  # "...".format(...), "".join([...]), str(x)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "format":
            return _literal(func.value)
        if isinstance(func, ast.Attribute) and func.attr == "join":
            return _HOLE.join(_literal(a) for a in node.args)
        return _HOLE.join(_literal(a) for a in node.args)
    if isinstance(node, (ast.List, ast.Tuple)):
        return _HOLE.join(_literal(e) for e in node.elts)
    if isinstance(node, ast.IfExp):
        return _literal(node.body) + _HOLE + _literal(node.orelse)
    return _HOLE


def _is_warn(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr == "warn") or (
        isinstance(f, ast.Name) and f.id == "warn"
    )


class _Collector(ast.NodeVisitor):
    """Message texts of ``raise X(...)`` / ``warnings.warn(...)``; a message held in a
    local variable (``msg = f"..."; raise X(msg)``) is read from its assignments."""

    def __init__(self, file: str):
        self.file = file
        self.found: list[Message] = []
        self._scopes: list[ast.AST] = []

    def _enter(self, node):
        self._scopes.append(node)
        self.generic_visit(node)
        self._scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _enter

    def _assigned(self, name: str) -> list[ast.AST]:
        """Values assigned to ``name`` in the enclosing function (read only when a message
        is a variable: walking every function up front doubled the test's time)."""
        if not self._scopes:
            return []
        assigns: dict[str, list[ast.AST]] = {}
        for sub in ast.walk(self._scopes[-1]):
            if isinstance(sub, ast.Assign):
                for t in sub.targets:
                    if isinstance(t, ast.Name):
                        assigns.setdefault(t.id, []).append(sub.value)
            elif isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
                assigns.setdefault(sub.target.id, []).append(sub.value)
            elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                if sub.value is not None:
                    assigns.setdefault(sub.target.id, []).append(sub.value)
        return assigns.get(name, [])

    def _texts(self, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Name):
            return [_literal(v) for v in self._assigned(node.id)]
        return [_literal(node)]

    def _add(self, line: int, args: list[ast.AST]):
        for a in args:
            for text in self._texts(a):
                if text.strip(_HOLE):
                    self.found.append(Message(self.file, line, text))

    def visit_Raise(self, node: ast.Raise):
        if isinstance(node.exc, ast.Call):
            self._add(node.lineno, [*node.exc.args, *(k.value for k in node.exc.keywords)])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call):
        if _is_warn(node) and node.args:
            self._add(node.lineno, node.args[:1])
        self.generic_visit(node)


def collect_messages() -> list[Message]:
    out: list[Message] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = _tree(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        c = _Collector(str(path.relative_to(SRC.parent)))
        c.visit(tree)
        out.extend(c.found)
    return out


# References are resolved from the source, not by import: importing tying.distributed,
# tying.fit and tying.chem costs seconds, and a message's advice is a fact about the source.
_MISSING = object()  # the name is not there
_OPAQUE = object()  # the name is there, but what it is cannot be told statically (a
#                     variable, something imported from outside tying): not checked further


@dataclass(frozen=True)
class _Module:
    name: str


@dataclass(frozen=True)
class _Def:
    module: str
    node: ast.AST  # FunctionDef / AsyncFunctionDef / ClassDef


_TREES: dict[str, ast.Module | None] = {}


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (SRC.parent / rel / "__init__.py", SRC.parent / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _tree(name: str) -> ast.Module | None:
    if name not in _TREES:
        f = _module_file(name.removesuffix(".__init__"))
        _TREES[name] = ast.parse(f.read_text(encoding="utf-8")) if f else None
    return _TREES[name]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = _module_file(module).name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_module(module: str, name: str, seen: frozenset = frozenset()):
    if (module, name) in seen:
        return _OPAQUE
    seen = seen | {(module, name)}
    tree = _tree(module)
    if tree is None:
        return _MISSING
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return _Def(module, node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return _OPAQUE
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(module, node)
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name) == name:
                    if not src.startswith("tying"):
                        return _OPAQUE
                    found = _lookup(_Module(src), alias.name if alias.name != "*" else name, seen)
                    if found is not _MISSING or alias.name != "*":
                        return found
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    return _Module(alias.name) if alias.name.startswith("tying") else _OPAQUE
    if _module_file(f"{module}.{name}"):
        return _Module(f"{module}.{name}")
    # Lazy re-exports (PEP 562): ``tying.<name>`` and ``tying.core.<name>`` come from the
    # module that tying.core's ``_WHERE`` table names.
    if module in ("tying", "tying.core"):
        for node in _tree("tying.core").body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_WHERE":
                where = ast.literal_eval(node.value)
                if name in where:
                    return _in_module(where[name], name, seen)
    return _MISSING


def _class_member(d: _Def, name: str, seen: frozenset = frozenset()):
    for node in d.node.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return _Def(d.module, node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return _OPAQUE
    for base in d.node.bases:
        if not isinstance(base, ast.Name):
            return _OPAQUE
        b = _in_module(d.module, base.id)
        if not isinstance(b, _Def) or not isinstance(b.node, ast.ClassDef):
            return _OPAQUE  # a base from outside tying (nn.Module, ...)
        found = _class_member(b, name)
        if found is not _MISSING:
            return found
    return _MISSING


def _lookup(obj, name: str, seen: frozenset = frozenset()):
    if isinstance(obj, _Module):
        return _in_module(obj.name, name, seen)
    if isinstance(obj, _Def) and isinstance(obj.node, ast.ClassDef):
        return _class_member(obj, name)
    return _OPAQUE


def _resolve(parts: list[str]):
    """``tying.a.b.c`` read from the source; ``_MISSING`` if a part is absent."""
    obj = _Module("tying")
    for part in parts:
        obj = _lookup(obj, part)
        if obj is _MISSING or obj is _OPAQUE:
            return obj
    return obj


def _is_class(obj) -> bool:
    return isinstance(obj, _Def) and isinstance(obj.node, ast.ClassDef)


def _is_callable(obj) -> bool:
    return obj is _OPAQUE or isinstance(obj, _Def)


def _call_args(text: str, start: int) -> tuple[str, int] | None:
    """The text inside the parentheses opening at ``text[start]`` and the index after the
    closing one; ``None`` when they never close."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def _top_level_keywords(args: str) -> list[str]:
    """Keyword names at the top level of a call's argument text."""
    depth, flat = 0, []
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        flat.append(ch if depth == 0 or ch in "([{" else " ")
    return _KW.findall("".join(flat))


def _parameters(obj) -> set[str] | None:
    """Keywords ``obj(...)`` accepts; ``None`` if it takes ``**kwargs`` or cannot be told."""
    if not isinstance(obj, _Def):
        return None
    node = obj.node
    if isinstance(node, ast.ClassDef):
        init = _class_member(obj, "__init__")
        if isinstance(init, _Def):
            return {p for p in _parameters(init) or ()} - {"self"} or None
        decorated = any("dataclass" in ast.unparse(d) for d in node.decorator_list)
        if init is _MISSING and decorated:  # a dataclass's keywords are its fields
            return {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        return None
    a = node.args
    if a.kwarg is not None:
        return None
    return {p.arg for p in (*a.args, *a.kwonlyargs)}


def _accepts(obj, keyword: str) -> bool | None:
    """Whether ``obj(...)`` accepts ``keyword=``; ``None`` if it cannot be told."""
    params = _parameters(obj)
    return None if params is None else keyword in params


def check(messages: list[Message]) -> tuple[int, list[str]]:
    """(number of references checked, problems found)."""
    checked, problems = 0, []
    for m in messages:
        where = f"{m.file}:{m.line}"
        callables = {}
        for match in _REF.finditer(m.text):
            ref = match.group(0)
            quote = m.text[match.start() - 1 : match.start()]
            if quote in ("'", '"') and m.text[match.end() : match.end() + 1] == quote:
                continue  # a quoted name is a string, not code: 'tying.format' is a file key
            if ref in ALLOW:
                continue
            parts = match.group(2).lstrip(".").split(".")
            if match.group(1) == "td":
                parts = ["distributed", *parts]
            checked += 1
            obj = _resolve(parts)
            if obj is _MISSING:
                problems.append(f"{where}: names {ref}, which does not exist")
                continue
            end = match.end()
            if end < len(m.text) and m.text[end] == "(" and _is_callable(obj):
                callables[ref] = obj
                call = _call_args(m.text, end)
                if call is None:
                    continue
                args, after = call
                for kw in _top_level_keywords(args):
                    checked += 1
                    if _accepts(obj, kw) is False:
                        problems.append(f"{where}: {ref}(..., {kw}=...) but {ref} has no {kw}")
                # ``tying.Plan([...]).apply(model)``: the method must exist on the class.
                attr = re.match(r"\.([A-Za-z_]\w*)", m.text[after:])
                if attr and _is_class(obj):
                    checked += 1
                    if _class_member(obj, attr.group(1)) is _MISSING:
                        problems.append(
                            f"{where}: {ref}(...).{attr.group(1)} but {obj.node.name} has no "
                            f"{attr.group(1)}"
                        )
            elif end < len(m.text) and m.text[end] == "(":
                problems.append(f"{where}: calls {ref}(...), which is not callable")
        # ``pass name=`` next to exactly one named tying callable: a parameter of it.
        if len(callables) == 1:
            ((ref, obj),) = callables.items()
            for kw in _PASS.findall(m.text):
                checked += 1
                if _accepts(obj, kw) is False:
                    problems.append(f"{where}: advises 'pass {kw}=' to {ref}, which has no {kw}")
    return checked, problems


def test_every_message_reference_names_a_real_api():
    messages = collect_messages()
    assert len(messages) > 500, "the collector stopped finding messages"
    checked, problems = check(messages)
    assert checked > 50, "the reference pattern stopped matching"
    assert not problems, "\n".join(problems)


def test_the_checker_catches_each_kind_of_bad_advice():
    bad = [
        Message("x.py", 1, "use tying.no_such_function(model)"),
        Message("x.py", 2, "use tying.Plan([tying.free('x')]).no_such_method(model)"),
        Message("x.py", 3, "use tying.share('a', like='b', no_such_keyword=1)"),
        Message("x.py", 4, "use td.no_such_thing(model, units=[...])"),
        Message("x.py", 5, "rule broken; pass no_such_keyword=1 to tying.share(...)"),
    ]
    checked, problems = check(bad)
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3", "4", "5"], problems
    good = [
        Message("x.py", 1, "use tying.Plan([tying.free('x')]).apply(model)"),
        Message("x.py", 2, f"use tying.share({_HOLE}, like={_HOLE}) or tying.{_HOLE}"),
        Message("x.py", 3, "see tying.core; pass like= to tying.share(...)"),
    ]
    assert check(good)[1] == []


@pytest.mark.parametrize(
    "src, expected",
    [
        ('raise ValueError(f"bad {x}; use tying.share(a, like=b)")', ["bad \x00; use tying"]),
        ('warnings.warn("see tying.count(model)", stacklevel=2)', ["see tying.count(model)"]),
        ('msg = "use tying.save"\nraise TypeError(msg)', ["use tying.save"]),
    ],
)
def test_the_collector_reads_fstrings_warnings_and_local_messages(src, expected):
    tree = ast.parse("def f(x):\n" + "\n".join("    " + ln for ln in src.splitlines()))
    c = _Collector("x.py")
    c.visit(tree)
    assert [m.text[: len(e)] for m, e in zip(c.found, expected)] == expected


if __name__ == "__main__":
    msgs = collect_messages()
    n, probs = check(msgs)
    print(len(msgs), "messages;", n, "references checked;", len(probs), "problems")
    print("\n".join(probs))
