"""Reading result rows by name: a statement's columns are generated from the row type it returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

R = TypeVar("R", bound=NamedTuple)


def select_list(columns: dict[str, str], row_type: type[NamedTuple]) -> str:
    """``expr, expr, ...`` in the order of ``row_type``'s fields, so a row and its statement cannot drift."""
    missing = set(row_type._fields) ^ set(columns)
    if missing:
        raise ValueError(f"columns and {row_type.__name__} disagree on {sorted(missing)}")
    return ", ".join(columns[name] for name in row_type._fields)


def split(row: Sequence[Any], *row_types: type[NamedTuple]) -> list[Any]:
    """Cut a joined row into one named row per type, in order (each takes as many columns as it has fields)."""
    parts: list[Any] = []
    start = 0
    for row_type in row_types:
        end = start + len(row_type._fields)
        parts.append(row_type._make(row[start:end]))
        start = end
    if start != len(row):
        raise ValueError(f"a row of {len(row)} columns is not {'+'.join(t.__name__ for t in row_types)}")
    return parts
