"""YAML with line numbers: load a document and find the line of any value in it.

ruamel.yaml's round-trip loader remembers where each key and list item sits
(`.lc` on CommentedMap/CommentedSeq). We keep that tree next to a plain copy
of the data (dict, list, str, int, float, bool) so validation sees ordinary
Python values while every error can still be pointed at a line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

Loc = tuple[str | int, ...]

_DUPLICATE_KEY = re.compile(r'found duplicate key "(?P<key>.*?)"')


class YamlSyntaxError(Exception):
    """The text is not valid YAML; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class YamlDocument:
    """One parsed YAML document: plain `data` plus the ruamel `tree` for line lookups."""

    data: Any
    tree: Any

    def locate(self, loc: Sequence[str | int]) -> tuple[int, str]:
        """Return (1-based line, dotted path like `profiles[0].local.command`) for a loc.

        Walks the tree as far as the loc goes: a missing key is reported at
        the line of the mapping that should hold it (the deepest part found).
        """
        node: Any = self.tree
        line = _start_line(node)
        path = ""
        for part in loc:
            if part == "[key]":  # pydantic marks "the key itself was wrong"
                continue
            if isinstance(node, CommentedMap):
                path += f".{part}" if path else str(part)
                key = _find_key(node, part)
                if key is _MISSING:
                    node = None
                    continue
                line = _key_line(node, key, line)
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(part, int):
                path += f"[{part}]"
                if not 0 <= part < len(node):
                    node = None
                    continue
                line = _item_line(node, part, line)
                node = node[part]
            else:
                # Left the tree (missing key): keep naming the path, keep the line.
                path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
                node = None
        return line, path


_MISSING = object()


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raise YamlSyntaxError with the line of the fault.

    Duplicate keys and multiple documents are syntax errors here: an admin
    file with either is almost certainly a mistake.
    """
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, _describe(exc)) from None
    except YAMLError as exc:  # reader errors (bad characters) carry no mark
        raise YamlSyntaxError(1, str(exc).strip().splitlines()[0]) from None
    except (IndexError, ValueError) as exc:
        # ruamel.yaml 0.19.1 itself fails on some scalars: `-_` resolves as an int and
        # constructor.py construct_yaml_int indexes the empty digits. No line is known.
        raise YamlSyntaxError(
            1,
            f"the YAML reader failed on this text ({type(exc).__name__}: {exc}); "
            "look for a value like `-_` that should be quoted",
        ) from None
    return YamlDocument(data=to_plain(tree), tree=tree)


def to_plain(node: Any) -> Any:
    """Copy a ruamel tree into plain Python types (so bool stays bool, strs are str)."""
    if isinstance(node, dict):
        return {_plain_key(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [to_plain(v) for v in node]
    if isinstance(node, TaggedScalar):
        return node.value
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        return node.isoformat()  # an unquoted date is surely meant as text here
    return node


def _plain_key(key: Any) -> Any:
    plain = to_plain(key)
    return str(plain) if isinstance(plain, list | dict) else plain  # `? [a, b]` keys


def _describe(exc: MarkedYAMLError) -> str:
    problem = (exc.problem or str(exc)).strip()
    dup = _DUPLICATE_KEY.search(problem)
    if dup:
        return f'duplicate key "{dup.group("key")}"'
    if exc.context and "single document" in exc.context:
        return "more than one YAML document (remove the extra '---')"
    if "<block" in problem:
        problem += " (check the indentation)"
    if "'\\t'" in problem:
        problem += " (indent with spaces, not tabs)"
    return problem


def _find_key(node: CommentedMap, part: str | int) -> Any:
    if part in node:
        return part
    for key in node:  # keys as loaded may differ in type from the loc (e.g. 1 vs "1")
        if str(key) == str(part):
            return key
    return _MISSING


def _start_line(node: Any) -> int:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None and lc.line is not None else 1


def _key_line(node: CommentedMap, key: Any, default: int) -> int:
    try:
        return int(node.lc.key(key)[0]) + 1
    except (KeyError, TypeError):  # keys brought in by a `<<:` merge have no position
        return default


def _item_line(node: CommentedSeq, index: int, default: int) -> int:
    try:
        return int(node.lc.item(index)[0]) + 1
    except (KeyError, TypeError):
        return default
