"""Fixtures for the API tests: the CRDs installed once per session on the shared control plane."""

from __future__ import annotations

from pathlib import Path

import pytest

from aima.testenv import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"


@pytest.fixture(scope="session")
def aima_crds(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with every AIMA CRD applied (server-side, as we document) and Established."""
    control_plane.kubectl("apply", "--server-side", "--field-manager=aima-tests", "-f", str(CRD_DIR))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-l", "app.kubernetes.io/part-of=aima", "crd"
    )
    return control_plane
