"""The generated CRDs: committed copies are current, schemas are structural and documented, and the
CEL rules, printer columns and subresources the issue asks for are there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aima.api import crds
from aima.api.common import ApiModel

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
BY_KIND = {d["spec"]["names"]["kind"]: d for d in crds.crds()}
KINDS = sorted(BY_KIND)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, properties, items and map values included."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def schema(kind: str) -> dict[str, Any]:
    root: dict[str, Any] = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def rules(kind: str) -> list[str]:
    return [
        rule["message"] for _, node in walk(schema(kind)) for rule in node.get("x-kubernetes-validations", [])
    ]


def test_committed_crds_match_the_models() -> None:
    for definition in crds.crds():
        path = CRD_DIR / crds.file_name(definition)
        assert path.exists(), f"{path} is missing; run python -m aima.api.crds --write crds/"
        assert path.read_text() == crds.render(definition), (
            f"{path.name} is stale; run python -m aima.api.crds --write crds/"
        )
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(crds.file_name(d) for d in crds.crds())


def test_check_command_reports_stale_directory(tmp_path: Path) -> None:
    assert crds.main(["--write", str(tmp_path)]) == 0
    assert crds.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "models.aima.dev.yaml").write_text("stale")
    assert crds.main(["--check", str(tmp_path)]) == 1


def test_rendered_yaml_parses_back_to_the_same_object() -> None:
    for definition in crds.crds():
        assert yaml.safe_load(crds.render(definition)) == definition


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    forbidden = {
        "$ref",
        "$defs",
        "$schema",
        "definitions",
        "title",
        "const",
        "oneOf",
        "allOf",
        "not",
        "discriminator",
        "uniqueItems",
        "patternProperties",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
    for path, node in walk(schema(kind)):
        assert not forbidden & node.keys(), f"{kind}{path}: {forbidden & node.keys()}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{kind}{path} has no type"
        assert node.get("type") != "null", f"{kind}{path}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{kind}{path}: anyOf outside int-or-string"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind: str) -> None:
    for path, node in walk(schema(kind)):
        for name, sub in node.get("properties", {}).items():
            if path == "" and name in {"apiVersion", "kind", "metadata"}:
                continue
            assert sub.get("description"), f"{kind}{path}.{name} has no description"
            assert "\n" not in sub["description"].replace("\n\n", ""), (
                f"{kind}{path}.{name}: stray line break"
            )


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_status_conditions_and_observed_generation(kind: str) -> None:
    version = BY_KIND[kind]["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    status = schema(kind)["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["required"]) == {"type", "status", "reason", "lastTransitionTime"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"


@pytest.mark.parametrize("kind", KINDS)
def test_names_short_names_and_category(kind: str) -> None:
    names = BY_KIND[kind]["spec"]["names"]
    assert names["categories"] == ["aima"]
    assert names["shortNames"]
    assert BY_KIND[kind]["metadata"]["name"] == f"{names['plural']}.aima.dev"


def test_scopes() -> None:
    scopes = {kind: d["spec"]["scope"] for kind, d in BY_KIND.items()}
    assert scopes == {
        "AlertRule": "Namespaced",
        "Engine": "Cluster",
        "InferenceService": "Namespaced",
        "Model": "Namespaced",
        "NodeDevices": "Cluster",
        "Pipeline": "Namespaced",
        "PipelineRun": "Namespaced",
    }


def test_inference_service_has_the_scale_subresource_and_isvc_short_name() -> None:
    definition = BY_KIND["InferenceService"]
    assert "isvc" in definition["spec"]["names"]["shortNames"]
    assert definition["spec"]["versions"][0]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    properties = schema("InferenceService")["properties"]
    assert properties["spec"]["properties"]["replicas"]["default"] == 1  # /scale GET needs a value
    assert properties["status"]["properties"]["selector"]["type"] == "string"


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_that_exist(kind: str) -> None:
    paths = {path for path, _ in walk(schema(kind))}
    for column in BY_KIND[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
        json_path = column["jsonPath"]
        assert column["description"]
        if json_path.startswith(".metadata."):
            continue
        field = json_path.split("[?", 1)[0].replace("[0]", "[]")
        assert field in paths, f"{kind} column {column['name']}: {json_path} is not in the schema"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("Model", "source must start with one of hf://, modelscope://, ollama://, https://, s3://, pvc://"),
        ("Model", "Hugging Face sources look like hf://org/repo or hf://org/repo@revision"),
        ("Model", "cache.size must be a positive quantity such as 50Gi"),
        ("Model", "cache.storageClassName cannot change once the volume exists; create a new Model instead"),
        ("InferenceService", "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"),
        ("InferenceService", "set GPUs with spec.resources.gpus, not as nvidia.com/gpu here"),
        ("InferenceService", "engineArgs keys are flag names without leading dashes, such as max-model-len"),
        ("Engine", "variant names must be unique"),
        ("Pipeline", "step ids must be unique"),
        ("Pipeline", "dependsOn may only name steps listed before the step"),
        ("PipelineRun", "a cancelled run cannot be resumed; create a new PipelineRun"),
    ],
)
def test_cel_rules_are_present(kind: str, message: str) -> None:
    assert message in rules(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_every_list_map_and_string_a_rule_walks_is_bounded(kind: str) -> None:
    """CEL's cost estimator refuses rules over unbounded lists and maps; keep every one bounded."""
    for path, node in walk(schema(kind)):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if node.get("type") == "array":
            assert "maxItems" in node, f"{kind}{path} has no maxItems"
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{kind}{path} has no maxProperties"


def test_nested_object_defaults_are_empty_so_inner_defaults_apply() -> None:
    health = schema("Engine")["properties"]["spec"]["properties"]["health"]
    assert health["default"] == {}
    assert health["properties"]["path"]["default"] == "/health"


def test_free_form_maps_keep_unknown_fields() -> None:
    step = schema("Pipeline")["properties"]["spec"]["properties"]["steps"]["items"]
    assert step["properties"]["inputs"]["x-kubernetes-preserve-unknown-fields"] is True
    env = schema("InferenceService")["properties"]["spec"]["properties"]["env"]
    assert env["additionalProperties"]["type"] == "string"


def test_generator_refuses_a_field_without_description() -> None:
    class Undocumented(ApiModel):
        size: int = 1

    with pytest.raises(crds.SchemaError, match="size: every field needs a description"):
        crds.structural_schema(Undocumented)


def test_generator_refuses_unions() -> None:
    class Either(ApiModel):
        value: int | list[int] = 1
        """A union the API server cannot express structurally."""

    with pytest.raises(crds.SchemaError, match="unions are not structural"):
        crds.structural_schema(Either)
