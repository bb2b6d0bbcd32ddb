"""Generate the CustomResourceDefinitions in `crds/` from the pydantic models.

The models are the single source of truth; this module turns their JSON Schema into the
*structural* OpenAPI subset the API server accepts (as kube-rs's `StructuralSchemaRewriter` does):
every `$ref` inlined, no `$defs`/`title`/`$schema`, `Optional[X]` collapsed to `X` (absent means
unset), `const` to `enum`, `dict[str, Any]` to `x-kubernetes-preserve-unknown-fields`, and nested
object defaults to `{}` so the API server fills the inner defaults itself.

    python -m aima.api.crds --write crds/     # regenerate
    python -m aima.api.crds --check crds/     # exit 1 when crds/ is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aima.api import alert, device, engine, inference_service, model, pipeline
from aima.api.common import GROUP, VERSION, CustomResource, PrinterColumn

__all__ = ["RESOURCES", "SchemaError", "crd", "crds", "file_name", "main", "render", "structural_schema"]

RESOURCES: tuple[CustomResource, ...] = (
    model.CRD,
    engine.CRD,
    inference_service.CRD,
    pipeline.PIPELINE_CRD,
    pipeline.PIPELINE_RUN_CRD,
    device.CRD,
    alert.CRD,
)

_DROPPED_KEYS = frozenset({"title", "$schema", "examples"})
_HEADER = "# Generated from operator/aima/api by `python -m aima.api.crds --write crds/`. Do not edit.\n"


class SchemaError(ValueError):
    """The models produced something the API server would reject; the message names the place."""


def structural_schema(model_type: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (pure)."""
    raw = model_type.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _rewrite(raw, defs=defs, where=model_type.__name__)


def _rewrite(node: Mapping[str, Any], *, defs: Mapping[str, Any], where: str) -> dict[str, Any]:
    node = _resolve(node, defs=defs, where=where)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "description":
            out[key] = _one_paragraph_per_line(value)
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {
                name: _rewrite(sub, defs=defs, where=f"{where}.{name}") for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _rewrite(value, defs=defs, where=f"{where}[]")
        elif key == "additionalProperties":
            out.update(_additional_properties(value, defs=defs, where=where))
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # OpenAPI v3.0 (what the API server speaks) wants booleans here; use ge/le in the models.
            raise SchemaError(f"{where}: use ge/le instead of gt/lt")
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and isinstance(out.get("default"), dict):
        out["default"] = {}  # let the API server apply the inner defaults, not a frozen copy of them
    _check(out, where=where)
    return _ordered(out)


_FIRST = ("type", "format", "description", "enum", "default")
_LAST = ("properties", "items", "additionalProperties", "required")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Type and description first, nested schemas last: the order a person reads a CRD in."""
    first = [key for key in _FIRST if key in node]
    last = [key for key in _LAST if key in node]
    middle = [key for key in node if key not in first and key not in last]
    return {key: node[key] for key in (*first, *middle, *last)}


def _resolve(node: Mapping[str, Any], *, defs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Inline `$ref` and collapse `anyOf [X, null]` into X, merging the outer keys over X's."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _merge(_resolve(target, defs=defs, where=where), node)
    options = node.get("anyOf")
    if options and not node.get("x-kubernetes-int-or-string"):
        rest = [option for option in options if option.get("type") != "null"]
        if len(rest) != 1:
            raise SchemaError(f"{where}: unions are not structural; use a struct of optional members")
        del node["anyOf"]
        return _merge(_resolve(rest[0], defs=defs, where=where), node)
    return node


def _merge(inner: dict[str, Any], outer: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**inner, **outer}
    rules = [*inner.get("x-kubernetes-validations", []), *outer.get("x-kubernetes-validations", [])]
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _additional_properties(value: Any, *, defs: Mapping[str, Any], where: str) -> dict[str, Any]:
    if value is False:
        return {}  # "additionalProperties cannot be set to false"; pruning drops unknown fields anyway
    if value is True or value == {}:
        return {"x-kubernetes-preserve-unknown-fields": True}
    return {"additionalProperties": _rewrite(value, defs=defs, where=f"{where}{{}}")}


def _check(node: Mapping[str, Any], *, where: str) -> None:
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description"):
            raise SchemaError(f"{where}.{name}: every field needs a description (an attribute docstring)")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{where}: a structural schema needs a type")


def _one_paragraph_per_line(text: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def crd(resource: CustomResource) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a plain dict (pure)."""
    names: dict[str, Any] = {
        "kind": resource.kind,
        "listKind": f"{resource.kind}List",
        "plural": resource.plural,
        "singular": resource.singular,
        "shortNames": list(resource.short_names),
        "categories": list(resource.categories),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "aima", "app.kubernetes.io/part-of": "aima"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": str(resource.scope),
            "versions": [_version(resource)],
        },
    }


def _version(resource: CustomResource) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _root_schema(resource)},
        "subresources": _subresources(resource),
        "additionalPrinterColumns": [_column(column) for column in resource.printer_columns],
    }
    if resource.selectable_fields:
        version["selectableFields"] = [{"jsonPath": path} for path in resource.selectable_fields]
    return version


def _root_schema(resource: CustomResource) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": resource.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object: aima.dev/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"The kind of this object: {resource.kind}."},
            "metadata": {"type": "object"},  # the API server allows nothing else here
            "spec": structural_schema(resource.spec),
            "status": structural_schema(resource.status),
        },
        "required": list(resource.required),
    }
    if resource.validations:
        schema["x-kubernetes-validations"] = list(resource.validations)
    return schema


def _subresources(resource: CustomResource) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return subresources


def _column(column: PrinterColumn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
        "description": column.description,
    }
    if column.priority:
        out["priority"] = column.priority
    if column.format:
        out["format"] = column.format
    return out


def crds() -> list[dict[str, Any]]:
    """Every AIMA CustomResourceDefinition (pure)."""
    return [crd(resource) for resource in RESOURCES]


def file_name(definition: Mapping[str, Any]) -> str:
    """`<plural>.aima.dev.yaml`: the CRD's own name, so files and objects match."""
    return f"{definition['metadata']['name']}.yaml"


class _Dumper(yaml.SafeDumper):
    """Never writes YAML anchors: shared lists in the schema become plain copies."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(definition: Mapping[str, Any]) -> str:
    """The YAML text committed in `crds/` (pure, deterministic)."""
    body = yaml.dump(dict(definition), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return _HEADER + body


def _stale(directory: Path) -> list[str]:
    wanted = {file_name(d): render(d) for d in crds()}
    stale = [name for name, text in wanted.items() if _read(directory / name) != text]
    extra = [p.name for p in directory.glob(f"*.{GROUP}.yaml") if p.name not in wanted]
    return sorted(stale + extra)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for definition in crds():
        (directory / file_name(definition)).write_text(render(definition))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aima.api.crds", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="DIR", help="write the CRDs into DIR")
    action.add_argument("--check", type=Path, metavar="DIR", help="exit 1 when DIR differs from the models")
    args = parser.parse_args(argv)
    if args.write is not None:
        _write(args.write)
        return 0
    stale = _stale(args.check)
    if stale:
        sys.stderr.write(
            f"Stale CRDs in {args.check}: {', '.join(stale)}; run python -m aima.api.crds --write\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
