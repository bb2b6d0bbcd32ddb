"""`helm upgrade` to a new image tag with a changed CRD, then `helm uninstall`, as the chart promises:
the CRDs upgraded in place, every component rolled to the new tag, and after uninstall nothing of
the release left but the CRDs and the users' Models (crds.keep). The new tag names the same build
(a second image build would add a minute and prove nothing more to the chart)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from suite import SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import CHART, RELEASE, Release, helm, image_values
from reads import condition, get_json, pods_of
from waiting import eventually

pytestmark = pytest.mark.realnode

NEW_FIELD = "upgradeNote"


def chart_with_a_new_model_field(folder: Path) -> Path:
    """A copy of the chart whose Model CRD has one more optional spec field."""
    chart = folder / "aima"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "models.aima.dev.yaml"
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"][NEW_FIELD] = {"type": "string", "description": "Added by the upgrade test."}
    path.write_text(yaml.safe_dump(crd))
    return chart


def release_objects(plane: ControlPlane, namespace: str) -> list[str]:
    kinds = "deployments,daemonsets,services,serviceaccounts,roles,rolebindings,configmaps"
    selector = f"--selector=app.kubernetes.io/instance={RELEASE}"
    names = plane.kubectl("get", kinds, "-n", namespace, selector, "-o", "name").stdout.split()
    cluster = plane.kubectl("get", "clusterroles,clusterrolebindings", selector, "-o", "name").stdout.split()
    return names + cluster


def test_upgrade_to_a_new_image_and_crd_then_uninstall(
    real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any], tmp_path: Path
) -> None:
    assert real_cluster.real_node is not None
    new_image = f"{platform.image.rsplit(':', 1)[0]}:upgraded"
    real_cluster.real_node.tag_image(platform.image, new_image)
    helm(
        real_cluster,
        "upgrade",
        RELEASE,
        str(chart_with_a_new_model_field(tmp_path)),
        f"--namespace={platform.namespace}",
        "--reuse-values",
        "--wait",
        "--timeout=4m",
        values=image_values(new_image),
    )
    crd = get_json(real_cluster, "crd", "models.aima.dev")
    assert (
        NEW_FIELD
        in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    )
    real_cluster.kubectl(
        "patch",
        "model",
        "tiny",
        "-n",
        SERVING_NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"spec": {NEW_FIELD: "kept"}}),
    )
    assert get_json(real_cluster, "model", "tiny", "-n", SERVING_NAMESPACE)["spec"][NEW_FIELD] == "kept"

    def rolled() -> bool:
        pods = [
            p for p in pods_of(real_cluster, platform.namespace) if not p["metadata"].get("deletionTimestamp")
        ]
        return bool(pods) and all(
            p["spec"]["containers"][0]["image"] == new_image and condition(p, "Ready") == "True" for p in pods
        )

    eventually(rolled, what="every component on the new image and Ready", timeout=180)

    helm(real_cluster, "uninstall", RELEASE, f"--namespace={platform.namespace}", "--wait", "--timeout=2m")
    eventually(
        lambda: not release_objects(real_cluster, platform.namespace),
        what="the release's objects to be gone",
        timeout=60,
    )
    eventually(
        lambda: not pods_of(real_cluster, platform.namespace),
        what="the release's pods to be gone",
        timeout=60,
    )
    assert get_json(real_cluster, "crd", "models.aima.dev", check=False), "the CRDs are kept (crds.keep)"
    model = get_json(real_cluster, "model", "tiny", "-n", SERVING_NAMESPACE)
    assert condition(model, "Ready") == "True", "the users' Models are kept with their status"
