"""The chart installed for real on a cluster with a real node: `helm install charts/aima` with the
image images.sh built, into a namespace that enforces the Restricted Pod Security Standard."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aima_testenv.binaries import REPO_ROOT

if TYPE_CHECKING:
    from aima_testenv.cluster import ControlPlane

CHART = REPO_ROOT / "charts" / "aima"
RELEASE = "aima"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class ChartError(RuntimeError):
    """helm failed; the message carries its output."""


@dataclass(frozen=True)
class Release:
    """An installed release: where it is and how long `helm install --wait` took."""

    namespace: str
    image: str
    install_seconds: float

    def name(self, component: str) -> str:
        """The name of one component's objects, e.g. ``release.name("gateway")``."""
        return f"{RELEASE}-{component}"


def image_values(image: str) -> dict[str, Any]:
    """Values that run ``image`` (``repository:tag``), present on the node, never pulled."""
    repository, tag = image.rsplit(":", 1)
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}


def helm(plane: ControlPlane, *args: str, values: dict[str, Any] | None = None, timeout: float = 300) -> str:
    """Run helm against ``plane``; values go in as a file, never as a command string."""
    argv = [str(plane.binaries.path("helm")), f"--kubeconfig={plane.kubeconfig}", *args]
    if values is not None:
        path = plane.workdir / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        argv.append(f"--values={path}")
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise ChartError(f"helm {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def install(
    plane: ControlPlane, *, image: str, namespace: str, values: dict[str, Any], chart: Path = CHART
) -> Release:
    """Create ``namespace`` with the Restricted label and `helm install --wait` the chart into it."""
    plane.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": RESTRICTED}}]
    )
    start = time.monotonic()
    helm(
        plane,
        "install",
        RELEASE,
        str(chart),
        f"--namespace={namespace}",
        "--wait",
        "--timeout=4m",
        values=_merged(image_values(image), values),
    )
    return Release(namespace=namespace, image=image, install_seconds=time.monotonic() - start)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
