"""Input from outside, parsed where it enters and bounded in depth: one bad message, line or request
fails alone with a clear reason and never takes a thread (or the service) with it."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # nesting no payload, request or job of heatctl's needs: deeper is refused


class UntrustedJsonError(ValueError):
    """Not JSON, or JSON nested deeper than ``MAX_DEPTH``; the message says which."""


def parse_json(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing nesting deeper than ``max_depth`` (Python's own recursion limit
    would otherwise be the bound: a ``RecursionError`` in whatever reads or writes it next)."""
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise UntrustedJsonError(f"nested deeper than {max_depth} levels") from exc
    except json.JSONDecodeError as exc:
        raise UntrustedJsonError(f"not JSON: {exc.msg} at column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise UntrustedJsonError(f"not UTF-8: {exc.reason}") from exc
    if _depth_over(value, max_depth):
        raise UntrustedJsonError(f"nested deeper than {max_depth} levels")
    return value


def _depth_over(value: Any, max_depth: int) -> bool:
    """Whether the parsed value nests deeper than ``max_depth`` (iteratively: no recursion of our own)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
