"""JSON descriptions of units: the catalog entry of one unit and the OpenAPI document of all of them."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from aima import __version__
from aima.units.core import Registry, Unit
from aima.units.envelope import ErrorInfo, Meta, Request, Response

__all__ = ["describe", "openapi"]

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
