"""Results within an agent's budget: compact JSON, cut to a size unless the agent asks for detail.

An agent pays for every character a tool returns, and a list of every pod or a full object with its
spec rarely changes what it does next. A result over the limit loses items from the end of its
longest lists (what is shown comes first, as the unit sorted it) and says what was left out and how
to get all of it; what still does not fit after that is cut as text.
"""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["DETAIL", "fit"]

DETAIL = "detail"
"""The argument any tool takes for its whole result."""
_HINT = f'add "{DETAIL}": true for all of it'


def fit(data: Any, *, limit: int) -> str:
    """`data` as compact JSON of at most `limit` characters (pure)."""
    text = _json(data)
    if len(text) <= limit:
        return text
    data, cut = copy.deepcopy(data), dict[str, int]()
    while len(text) > limit and (found := _longest_list(data, path="")) is not None:
        path, items = found
        cut.setdefault(path, len(items))
        items.pop()
        notes = {p: f"{len(_at(data, p))} of {total} shown" for p, total in cut.items()}
        text = _json(data | {"truncated": notes | {"hint": _HINT}} if isinstance(data, dict) else data)
    if len(text) <= limit:
        return text
    tail = f"\n... cut at {limit:,} of {len(text):,} characters; {_HINT}"
    return text[: limit - len(tail)] + tail


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _longest_list(data: Any, *, path: str) -> tuple[str, list[Any]] | None:
    """The path and value of the list with the most characters that still has an item to lose."""
    found: list[tuple[int, str, list[Any]]] = []
    if isinstance(data, list) and data:
        found.append((len(_json(data)), path or ".", data))
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in children:
        if isinstance(value, dict | list) and (inner := _longest_list(value, path=f"{path}.{key}")):
            found.append((len(_json(inner[1])), *inner))
    if not found:
        return None
    _, where, items = max(found, key=lambda f: f[0])
    return where.lstrip(".") or ".", items


def _at(data: Any, path: str) -> Any:
    for key in path.split(".") if path != "." else ():
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data
