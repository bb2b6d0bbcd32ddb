"""Helpers for desired child objects (pure): owner references, and whether an observed object
already holds everything a desired one says."""

from __future__ import annotations

from typing import Any

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
