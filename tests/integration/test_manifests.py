"""`manifests/` is the chart's install as kustomize: generated from it, never drifting from it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aima_testenv import ensure_binaries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Labels and annotations by which Helm's rendering rightly differs from kustomize's.
_RELEASE_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def canonical(obj: dict[str, Any]) -> str:
    """The object without Helm's release bookkeeping, as sortable JSON."""
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in _RELEASE_LABELS:
            meta.get("labels", {}).pop(key, None)
        annotations = meta.get("annotations", {})
        for key in [k for k in annotations if k.startswith("helm.sh/")]:
            del annotations[key]
        if "annotations" in meta and not annotations:
            del meta["annotations"]
    return json.dumps(obj, sort_keys=True)


def test_generated_files_are_current() -> None:
    result = subprocess.run(
        [str(ROOT / "hack" / "generate"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_kustomize_builds_the_objects_the_chart_renders() -> None:
    binaries = ensure_binaries()
    built = yaml.safe_load_all(run(str(binaries.path("kubectl")), "kustomize", str(ROOT / "manifests")))
    helm = run(
        str(binaries.path("helm")), "template", "aima", str(ROOT / "charts" / "aima"), "-n", "aima-system"
    )
    from_chart = sorted(canonical(o) for o in yaml.safe_load_all(helm) if o)
    from_kustomize = [o for o in built if o]
    # The Namespace is kustomize's own: `helm install --create-namespace` makes it there.
    namespaces = [o for o in from_kustomize if o["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == ["aima-system"]
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert sorted(canonical(o) for o in from_kustomize if o["kind"] != "Namespace") == from_chart
    assert {o["kind"] for o in from_kustomize} >= {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Deployment",
        "Service",
    }


def test_the_loader_role_stays_where_the_operator_tests_find_it() -> None:
    role = yaml.safe_load((ROOT / "manifests" / "rbac" / "loader-clusterrole.yaml").read_text())
    assert role["kind"] == "ClusterRole"
    assert role["metadata"]["name"] == "aima-loader"
    assert {"apiGroups": ["aima.dev"], "resources": ["models/status"], "verbs": ["get", "patch"]} in role[
        "rules"
    ]
