"""JSON descriptions of units: the catalog entry of one unit, the OpenAPI document of all of them, and
the compact input schema an agent reads in a tool list.

The full schemas (`describe`, `openapi`) keep every constraint and CEL rule. An agent pays for each
character of its tool list before it does any work, and cannot act on a CEL rule or a length limit:
the compact schema keeps what it needs to write a call (names, types, enums, defaults, the first
clause of what is not plain) and names a nested object's fields instead of spelling them out.
Validation is the model's either way: a call the compact schema allows and the model refuses comes
back as INVALID_INPUT naming the field, and the fields that are taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aima import __version__
from aima.units.core import Registry, Unit
from aima.units.envelope import ErrorInfo, Meta, Request, Response

__all__ = ["compact_schema", "describe", "openapi"]

_REF = "#/components/schemas/{model}"


def describe(unit: Unit[Any, Any]) -> dict[str, Any]:
    """A unit as the catalog lists it: name, kind, hints, JSON schemas and examples."""
    return {
        "name": unit.name,
        "type": str(unit.kind),
        "domain": unit.domain,
        "description": unit.description,
        "readOnly": unit.read_only,
        "destructive": unit.destructive,
        "idempotent": unit.idempotent,
        "inputSchema": unit.input.model_json_schema(by_alias=True),
        "outputSchema": unit.output.model_json_schema(by_alias=True, mode="serialization"),
        "examples": [{"description": e.description, "input": dict(e.input)} for e in unit.examples],
    }


def openapi(registry: Registry) -> dict[str, Any]:
    """An OpenAPI 3.1 document with one operation per unit, generated from the registry."""
    units = list(registry)
    pairs = [(u.input, "validation") for u in units] + [(u.output, "serialization") for u in units]
    pairs += [(Request, "validation"), (Response, "serialization"), (ErrorInfo, "serialization")]
    refs, definitions = models_json_schema(pairs, by_alias=True, ref_template=_REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = definitions.get("$defs", {})
    paths: dict[str, Any] = {
        "/api/v2/execute": {
            "post": {
                "operationId": "execute",
                "summary": "Run any unit with the envelope {type, unit, input}",
                "requestBody": _body(refs[(Request, "validation")]),
                "responses": _responses(refs[(Response, "serialization")]),
            }
        },
        "/api/v2/units": {"get": {"operationId": "listUnits", "summary": "The catalog of units", **_plain()}},
        "/api/v2/units/{unit}": {
            "get": {
                "operationId": "describeUnit",
                "summary": "One unit: schemas, hints and examples",
                "parameters": [_parameter("unit", "path", "A unit's name, such as model.pull")],
                **_plain(),
            }
        },
        "/api/v2/resources": {
            "get": {
                "operationId": "readResource",
                "summary": "A resource by URI (aima://models, aima://services/{name}, aima://gpus, ...)",
                "parameters": [_parameter("uri", "query", "The resource's URI")],
                **_plain(),
            }
        },
        "/api/v2/resources/watch": {
            "get": {
                "operationId": "watchResource",
                "summary": "A resource by URI, sent again as Server-Sent Events whenever it changes",
                "parameters": [_parameter("uri", "query", "The resource's URI")],
                "responses": {"200": {"description": "An SSE stream", "content": {"text/event-stream": {}}}},
            }
        },
        "/api/v2/pipelines/{name}/run": {
            "post": {
                "operationId": "runPipeline",
                "summary": "Run a Pipeline now; with stream (or Accept: text/event-stream) its events as SSE",
                "parameters": [_parameter("name", "path", "The Pipeline's name")],
                "requestBody": _body(_RUN_BODY),
                "responses": {
                    "200": {
                        "description": "The run's outputs, or its events as they happen",
                        "content": {"application/json": {}, "text/event-stream": {}},
                    }
                },
            }
        },
        "/healthz": {"get": {"operationId": "health", "summary": "Liveness", "security": [], **_plain()}},
        "/metrics": {
            "get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [], **_plain()}
        },
    }
    for unit in units:
        data = refs[(unit.output, "serialization")]
        paths[f"/api/v2/{unit.kind}/{unit.name}"] = {
            "post": {
                "operationId": unit.name.replace(".", "_"),
                "summary": unit.description.split(". ")[0],
                "description": unit.description,
                "tags": [unit.domain],
                "requestBody": _body(refs[(unit.input, "validation")]),
                "responses": _responses(_envelope(data)),
                "x-aima-read-only": unit.read_only,
                "x-aima-destructive": unit.destructive,
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "AIMA units", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


_RUN_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "namespace": {"type": "string", "maxLength": 63},
        "inputs": {"type": "object", "description": "The Pipeline's inputs by name"},
        "config": {"type": "object", "description": "Overrides of the Pipeline's spec.config"},
        "stream": {"type": "boolean", "default": False},
    },
}


def _parameter(name: str, where: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _envelope(data: Any) -> dict[str, Any]:
    meta = Meta.model_json_schema(ref_template=_REF)
    return {
        "type": "object",
        "required": ["success", "meta"],
        "properties": {"success": {"const": True}, "data": data, "meta": meta},
    }


def _responses(success: Any) -> dict[str, Any]:
    error = {"$ref": _REF.format(model="Response")}
    return {
        "200": {"description": "The unit ran", "content": {"application/json": {"schema": success}}},
        "default": {
            "description": "An error envelope with a stable code",
            "content": {"application/json": {"schema": error}},
        },
    }


def _plain() -> dict[str, Any]:
    return {"responses": {"200": {"description": "OK"}}}


_KEPT = frozenset({"type", "enum", "const", "default", "format"})
"""Keys of a JSON schema an agent writes calls from; bounds, lengths and patterns are left to
validation, which names the bound a value breaks."""
_DESCRIPTION_CHARS = 100
_CLAUSE_END = re.compile(r"[.;](\s|$)")


def compact_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The input schema of `model` as a tool list shows it (pure).

    Required fields and objects keep the first clause of their description, a nested object with the
    names of its fields; an optional plain field (`tail`, `wait`, `temperature`, an enum) is its name,
    type, values and default, which say what it sets. The full schema has the rest."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    required = raw.get("required", [])
    properties = {
        name: _field(sub, defs=defs, described=name in required and name != "name")
        for name, sub in raw.get("properties", {}).items()
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    return schema | ({"required": required} if required else {})


def _field(node: Mapping[str, Any], *, defs: Mapping[str, Any], described: bool) -> dict[str, Any]:
    node = _resolved(node, defs=defs)
    out = {key: value for key, value in node.items() if key in _KEPT}
    if not out.get("default") or isinstance(out["default"], dict | list):
        out.pop("default", None)  # unset, false and zero go without saying; an object's are its fields'
    said = [_first_clause(node.get("description", ""))]
    if "properties" in node:
        said.append(f"fields {', '.join(node['properties'])}")
    elif isinstance(node.get("items"), Mapping):
        item = _resolved(node["items"], defs=defs)
        out["items"] = _field(item, defs=defs, described=False)
        if "properties" in item:  # said once, on the list
            out["items"] = {"type": "object"}
            said.append(f"items with fields {', '.join(item['properties'])}")
    elif "anyOf" in node:
        out["anyOf"] = [_field(option, defs=defs, described=False) for option in node["anyOf"]]
    shaped = "properties" in node or out.get("type") in ("object", "array")
    if (described or shaped) and (description := "; ".join(part for part in said if part)):
        out["description"] = description
    return out


def _resolved(node: Mapping[str, Any], *, defs: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with its `$ref` inlined and `X | None` written as X (absent means unset)."""
    node = dict(node)
    if "$ref" in node:
        node = {**defs[node.pop("$ref").rsplit("/", 1)[-1]], **node}
    options = [option for option in node.get("anyOf", ()) if option.get("type") != "null"]
    if len(options) == 1 and len(options) < len(node["anyOf"]):
        del node["anyOf"]
        node = {**_resolved(options[0], defs=defs), **node}
    return node


def _first_clause(text: str) -> str:
    """What a description says first, in at most about 100 characters."""
    clause = _CLAUSE_END.split(" ".join(text.split()), maxsplit=1)[0]
    if len(clause) <= _DESCRIPTION_CHARS:
        return clause
    return clause[:_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "..."
