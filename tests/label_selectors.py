"""Label selectors found in objects (a NetworkPolicy's, a Deployment's), and what they select: by the
API server's own matching (`kubectl get -l`) on a cluster, or by the same rules on rendered objects."""

from __future__ import annotations

import json
from typing import Any

from aima_testenv import ControlPlane

_SET_OPERATORS = {"In": "in", "NotIn": "notin"}


def kubectl_selector(selector: dict[str, Any]) -> str:
    """``selector`` (a `metav1.LabelSelector`) in kubectl's syntax, e.g. `a=b,c in (d,e),!f`."""
    terms = [f"{key}={value}" for key, value in sorted(selector.get("matchLabels", {}).items())]
    for requirement in selector.get("matchExpressions", []):
        key, operator = requirement["key"], requirement["operator"]
        if operator in _SET_OPERATORS:
            terms.append(f"{key} {_SET_OPERATORS[operator]} ({','.join(requirement['values'])})")
        else:
            terms.append(key if operator == "Exists" else f"!{key}")
    return ",".join(terms)


def selected(
    plane: ControlPlane, kind: str, selector: dict[str, Any], *, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The objects of ``kind`` the API server lists for ``selector`` (those being deleted left out)."""
    where = ["-n", namespace] if namespace else []
    listing = plane.kubectl("get", kind, *where, "-l", kubectl_selector(selector), "-o", "json").stdout
    return [o for o in json.loads(listing)["items"] if not o["metadata"].get("deletionTimestamp")]


def deployment_pods(plane: ControlPlane, namespace: str, deployment: str) -> list[dict[str, Any]]:
    """The pods of ``deployment``'s ReplicaSets, found by ownership, not by label."""
    sets = json.loads(plane.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
    owned = {r["metadata"]["name"] for r in sets if _owned_by(r, deployment)}
    pods = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp") and any(_owned_by(p, name) for name in owned)
    ]


def _owned_by(obj: dict[str, Any], owner: str) -> bool:
    return any(o["name"] == owner for o in obj["metadata"].get("ownerReferences", []))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether ``selector`` selects an object labelled ``labels``, by the API server's rules."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(_holds(requirement, labels) for requirement in selector.get("matchExpressions", []))


def _holds(requirement: dict[str, Any], labels: dict[str, str]) -> bool:
    key: str = requirement["key"]
    operator: str = requirement["operator"]
    values: list[str] = requirement.get("values", [])
    if operator in ("In", "NotIn"):
        return (labels.get(key) in values) == (operator == "In")
    return (key in labels) == (operator == "Exists")
