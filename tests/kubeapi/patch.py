"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), with Kubernetes' error codes.

Strategic merge patch is served as a merge patch: fine for labels,
annotations and scalar fields; lists are replaced, not merged by key.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902. A malformed patch is 400; an operation that fails (including `test`) is 422."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        doc = _apply_op(doc, op)
    return doc


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message, reason="Invalid")


def _split(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise _unprocessable(f"doc is missing path: {path}: missing value")
    return current, parts[-1]


def _get(doc: Any, path: str) -> Any:
    current = doc
    for part in _split(path):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise _unprocessable(f"doc is missing path: {path}: missing value")
    return current


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _split(path)
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else _index(last, len(parent) + 1, path)
        parent.insert(index, copy.deepcopy(value))
    else:
        raise _unprocessable(f"doc is missing path: {path}: missing value")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _split(path)
    if not parts:
        raise _unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), path))
    raise _unprocessable(f"unable to remove nonexistent key: {last}: missing value")


def _index(part: str, size: int, path: str) -> int:
    if not part.isdigit() or int(part) >= size:
        raise _unprocessable(f"Unable to access invalid index: {part}: invalid index referenced")
    return int(part)


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind == "add":
        return _add(doc, path, op.get("value"))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        _get(doc, path)
        if not _split(path):
            return copy.deepcopy(op.get("value"))
        parent, last = _parent(doc, _split(path), path)
        if isinstance(parent, list):
            parent[_index(last, len(parent), path)] = copy.deepcopy(op.get("value"))
        else:
            parent[last] = copy.deepcopy(op.get("value"))
        return doc
    if kind == "test":
        if _get(doc, path) != op.get("value"):
            raise _unprocessable(f"testing value {path} failed: test failed")
        return doc
    if kind in ("move", "copy"):
        source = op.get("from", "")
        value = copy.deepcopy(_get(doc, source))
        if kind == "move":
            doc = _remove(doc, source)[0]
        return _add(doc, path, value)
    raise bad_request(f"Unexpected kind: {kind}")
