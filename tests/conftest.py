"""Shared fixtures: the local control plane (started once per session, only when a test needs it)
and a fresh namespace per test."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from aima.testenv import ControlPlane, ensure_binaries


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real control plane with kwok GPU nodes; a start failure fails every test that needs it."""
    with ControlPlane(binaries=ensure_binaries()) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own, deleted afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
