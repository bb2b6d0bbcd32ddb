"""Helpers for desired objects (pure): owner references, whether an observed object already holds
everything a desired one says, and the one way a status is written (a merge patch over the status read)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel

from aima.api.common import Keys

Body = dict[str, Any]


def owner_reference(owner: Body) -> Body:
    """A controller owner reference to ``owner``, so children are garbage-collected with it."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def managed_labels(*, component: str, extra: dict[str, str]) -> dict[str, str]:
    """Labels every child carries: who manages it, what part it is, and whose it is."""
    return {Keys.MANAGED_BY: "aima", Keys.COMPONENT: component} | extra


def is_satisfied(desired: Any, observed: Any) -> bool:
    """Whether ``observed`` contains every field of ``desired`` with an equal value.

    Fields the API server adds (defaults, status, managedFields) are ignored, so an unchanged
    child compares satisfied and the reconcile sends no write at all.
    """
    if desired in ({}, []) and observed is None:
        return True  # the API server omits empty maps and lists
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            is_satisfied(value, observed.get(key)) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(is_satisfied(d, o) for d, o in zip(desired, observed, strict=True))
        )
    if isinstance(desired, int | float) and not isinstance(desired, bool) and isinstance(observed, str):
        return str(desired) == observed  # quantities come back as strings
    return bool(desired == observed)


def status_patch(status: BaseModel, *, observed: Body | None, others: Collection[str] = ()) -> Body | None:
    """``status`` as a merge patch over ``observed``, or None when nothing changed (a steady state
    writes nothing). Fields ``status`` no longer has become null, so a field that went away does not
    linger; fields another writer owns (``others``: the loader's progress of a Model) are neither
    compared nor written, so this writer cannot undo a newer report of theirs."""
    mine = {
        key: value
        for key, value in status.model_dump(mode="json", by_alias=True, exclude_none=True).items()
        if key not in others
    }
    current = {key: value for key, value in (observed or {}).items() if key not in others}
    if mine == current:
        return None
    return {key: None for key in current if key not in mine} | mine
