"""The CRDs against the models they are generated from: objects generated from each CRD's schema go
to the real API server as a server-side dry run, and every one it admits (as it would store it:
pruned, defaulted) must parse as the operator's model, or the CRD admits what the operator cannot read.

A spec drawn whole from the schema rarely passes the CEL rules (which the generator cannot read), so
most examples are a valid seed with one field, at any depth, drawn from its schema instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from aima.api.alert import AlertRule
from aima.api.common import CustomResource, Scope
from aima.api.crds import RESOURCES, crd
from aima.api.device import NodeDevices
from aima.api.engine import Engine
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import Pipeline, PipelineRun
from aima_testenv import ControlPlane
from fuzzing import fuzz, instances

pytestmark = pytest.mark.integration

MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (Model, Engine, InferenceService, Pipeline, PipelineRun, NodeDevices, AlertRule)
}
CATALOG = Path(__file__).resolve().parents[2] / "catalog"
SEEDS: dict[str, dict[str, Any]] = {
    "Model": {"source": "hf://acme/tiny", "type": "LLM"},
    "Engine": yaml.safe_load((CATALOG / "engines" / "llama-cpp.yaml").read_text())["spec"],
    "InferenceService": {"modelRef": {"name": "tiny"}},
    "Pipeline": yaml.safe_load((CATALOG / "pipelines" / "rag.yaml").read_text())["spec"],
    "PipelineRun": {"pipelineRef": {"name": "rag"}},
    "NodeDevices": {"nodeName": "fuzz"},
    "AlertRule": {"condition": {"gpu": {"metric": "TemperatureCelsius", "above": 90}}},
}
"""A valid spec of each kind, for the name `fuzz`."""


def test_every_kind_has_its_model_and_seed_here() -> None:
    assert set(MODELS) == set(SEEDS) == {r.kind for r in RESOURCES}


@pytest.mark.parametrize("resource", RESOURCES, ids=[r.kind for r in RESOURCES])
def test_what_the_api_server_admits_parses_as_the_operators_model(
    resource: CustomResource, aima_crds: ControlPlane, namespace: str
) -> None:
    schema = crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    where = {"namespace": namespace} if resource.scope is Scope.NAMESPACED else {}
    admitted: list[dict[str, Any]] = []

    @fuzz(30)
    @given(spec=mutations(SEEDS[resource.kind], schema) | instances(schema))
    def dry_run(spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": resource.kind,
            "metadata": {"name": "fuzz", **where},
            "spec": spec,
        }
        created = aima_crds.kubectl(
            "create",
            "--dry-run=server",
            "--validate=ignore",
            "-o",
            "json",
            "-f",
            "-",
            stdin=json.dumps(body),
            check=False,
        )
        if created.returncode == 0:
            stored = json.loads(created.stdout)
            MODELS[resource.kind].model_validate(stored)  # raises on what the operator cannot read
            admitted.append(stored)

    dry_run()
    assert admitted, f"the API server refused every generated {resource.kind}"


def mutations(seed: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`seed` with one field, at any depth of its objects, drawn from that field's schema."""
    fields = list(_fields(seed, schema, at=()))
    return st.sampled_from(fields).flatmap(
        lambda field: instances(field[1]).map(lambda value: _replaced(seed, field[0], value))
    )


def _fields(
    seed: dict[str, Any], schema: dict[str, Any], *, at: tuple[str, ...]
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """The paths of the fields `schema` declares (under the objects `seed` has), with their schemas."""
    found = []
    for name, field in schema.get("properties", {}).items():
        found.append(((*at, name), field))
        if isinstance(seed.get(name), dict):
            found += _fields(seed[name], field, at=(*at, name))
    return found


def _replaced(seed: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    head, *rest = path
    return seed | {head: _replaced(seed.get(head, {}), tuple(rest), value) if rest else value}
