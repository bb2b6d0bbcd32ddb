"""Reading the cluster's objects as a user would with kubectl, for assertions."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from aima_testenv import ControlPlane
from waiting import eventually

# Every component of the local cluster authenticates as the same admin; they differ by user agent.
_OTHER_WRITERS = ("kubectl/", "kube-controller-manager/", "kube-scheduler/", "kwok/")


def get_json(plane: ControlPlane, kind: str, name: str, *args: str, check: bool = True) -> dict[str, Any]:
    """``kubectl get KIND NAME ARGS -o json`` (an empty NAME lists, as a selector in ARGS wants); with
    ``check=False`` an absent object reads as {}."""
    result = plane.kubectl("get", kind, *([name] if name else []), *args, "-o", "json", check=check)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def pods_of(plane: ControlPlane, namespace: str, *, component: str | None = None) -> list[dict[str, Any]]:
    """The pods of a namespace, or of one chart component (``app.kubernetes.io/component``)."""
    selector = [f"--selector=app.kubernetes.io/component={component}"] if component else []
    listing = json.loads(plane.kubectl("get", "pods", "-n", namespace, *selector, "-o", "json").stdout)
    return list(listing["items"])


def condition(obj: dict[str, Any], kind: str) -> str | None:
    """The status ("True", "False", "Unknown") of one condition of an object, None when absent."""
    found = condition_of(obj, kind)
    return None if found is None else str(found["status"])


def condition_of(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """One condition of an object, whole (status, reason, message), None when absent."""
    conditions = obj.get("status", {}).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == kind), None)


def ready_seconds(
    plane: ControlPlane, kind: str, name: str, namespace: str, *, since: float, timeout: float = 180
) -> float:
    """Wait until the object is Ready (a Deployment: Available); the seconds since ``since``. A
    timeout says the condition as last seen: what the object itself said it waited on."""
    seen: list[dict[str, Any] | None] = [None]

    def ready() -> bool:
        seen[0] = condition_of(get_json(plane, kind, name, "-n", namespace, check=False), _ready_type(kind))
        return seen[0] is not None and seen[0]["status"] == "True"

    try:
        eventually(ready, what=f"{kind} {name} to be Ready", timeout=timeout)
    except pytest.fail.Exception:
        pytest.fail(f"{kind} {name} not Ready after {timeout:.0f} s; last seen: {seen[0]}")
    return time.monotonic() - since


def _ready_type(kind: str) -> str:
    # Deployments say Available where the AIMA kinds say Ready.
    return "Available" if kind == "deployment" else "Ready"


def writes_since(plane: ControlPlane, offset: int, *, namespace: str) -> list[dict[str, Any]]:
    """Audited writes in ``namespace`` after byte ``offset`` of the audit log, except the test's own and
    the cluster components'."""
    with plane.audit_log.open("rb") as log:
        log.seek(offset)
        # The API server may be writing the last line right now: only whole lines are read.
        whole = log.read().rpartition(b"\n")[0]
        entries = [json.loads(line) for line in whole.splitlines() if line.strip()]
    return [
        e
        for e in entries
        if e.get("objectRef", {}).get("namespace") == namespace
        and e["verb"] in ("create", "update", "patch", "delete")
        and not e.get("userAgent", "").startswith(_OTHER_WRITERS)
    ]


def restrictions_missing(pod: dict[str, Any]) -> list[str]:
    """What a pod's containers lack of the Restricted standard and a read-only root filesystem, as
    ``pod/container: setting`` lines; empty when every container has all of it."""
    missing = []
    pod_context = pod["spec"].get("securityContext", {})
    wanted = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    for container in pod["spec"]["containers"]:
        context = pod_context | container.get("securityContext", {})
        where = f"{pod['metadata']['name']}/{container['name']}"
        missing += [f"{where}: {key}" for key, value in wanted.items() if context.get(key) != value]
    return missing


def assert_runs_locked_down(plane: ControlPlane, pod: dict[str, Any], *, uid: int = 65532) -> None:
    """Inside the running container, not only in its spec: the engine's user is ``uid``, the root
    filesystem refuses a write and HOME takes one (the image must have ``id``, ``touch`` and ``sh``)."""
    assert restrictions_missing(pod) == []
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]

    def run(*argv: str) -> Any:
        return plane.kubectl("exec", name, "-n", namespace, "--", *argv, check=False)

    assert run("id", "-u").stdout.strip() == str(uid)
    refused = run("touch", "/written-by-the-engine")
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    assert run("sh", "-c", 'touch "$HOME/written-by-the-engine"').returncode == 0
