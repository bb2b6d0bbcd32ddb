"""Errors of units: a stable code, a message a person or an agent can act on, and details.

The codes are the contract: doors map them to HTTP statuses and CLI exit codes here, in one table,
and clients branch on the code, never on the message.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["ErrorCode", "UnitError", "exit_code", "first_error", "http_status"]


class ErrorCode(StrEnum):
    """Stable error codes; new codes may be added, existing ones never change meaning."""

    INVALID_INPUT = "INVALID_INPUT"
    UNIT_NOT_FOUND = "UNIT_NOT_FOUND"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    ENGINE_NOT_FOUND = "ENGINE_NOT_FOUND"
    SERVICE_NOT_FOUND = "SERVICE_NOT_FOUND"
    PIPELINE_NOT_FOUND = "PIPELINE_NOT_FOUND"
    PIPELINE_RUN_NOT_FOUND = "PIPELINE_RUN_NOT_FOUND"
    NAMESPACE_NOT_FOUND = "NAMESPACE_NOT_FOUND"
    """The namespace a call names (or the door's default one) does not exist."""
    NOT_FOUND = "NOT_FOUND"
    """Another object (or the API itself, such as a CRD not installed) was not found."""
    CONFLICT = "CONFLICT"
    INSUFFICIENT_RESOURCES = "INSUFFICIENT_RESOURCES"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    TIMEOUT = "TIMEOUT"
    UNAVAILABLE = "UNAVAILABLE"
    """The API server could not be reached or answered 5xx; trying again later may work."""
    INTERNAL = "INTERNAL"


# code: (HTTP status, CLI exit code). Exit code 2 is click's own for usage errors, as INVALID_INPUT.
_STATUS: dict[ErrorCode, tuple[int, int]] = {
    ErrorCode.INVALID_INPUT: (400, 2),
    ErrorCode.UNIT_NOT_FOUND: (404, 2),
    ErrorCode.MODEL_NOT_FOUND: (404, 3),
    ErrorCode.ENGINE_NOT_FOUND: (404, 3),
    ErrorCode.SERVICE_NOT_FOUND: (404, 3),
    ErrorCode.PIPELINE_NOT_FOUND: (404, 3),
    ErrorCode.PIPELINE_RUN_NOT_FOUND: (404, 3),
    ErrorCode.NAMESPACE_NOT_FOUND: (404, 3),
    ErrorCode.NOT_FOUND: (404, 3),
    ErrorCode.CONFLICT: (409, 4),
    ErrorCode.INSUFFICIENT_RESOURCES: (409, 5),
    ErrorCode.UNAUTHORIZED: (401, 6),
    ErrorCode.FORBIDDEN: (403, 6),
    ErrorCode.TIMEOUT: (504, 7),
    ErrorCode.UNAVAILABLE: (503, 8),
    ErrorCode.INTERNAL: (500, 1),
}


def http_status(code: ErrorCode) -> int:
    """The HTTP status the HTTP door answers with for an error code."""
    return _STATUS[code][0]


def exit_code(code: ErrorCode) -> int:
    """The exit status `aima exec` ends with for an error code."""
    return _STATUS[code][1]


@dataclass
class UnitError(Exception):
    """A unit failed in a way its caller can understand; raised by units, rendered by the doors."""

    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def first_error(invalid: ValidationError, *, model: type[BaseModel]) -> str:
    """The first problem of ``invalid`` (an input of ``model``) in words; for an unknown field, the
    fields its object does take."""
    first = invalid.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        # Naming what the object does take is the fix an agent needs (a dropped field never is).
        owner = ".".join(str(p) for p in first["loc"][:-1]) or "the input"
        return f"{where}: unknown field; {owner} takes {', '.join(_fields_at(model, first['loc'][:-1]))}"
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The wire names of the fields the object at `loc` of `model`'s input takes (pure)."""
    current = model
    for step in loc:
        info = next((f for n, f in current.model_fields.items() if step in (n, f.alias)), None)
        if info is None:
            continue  # a list index or a map key: the item is of the field's model still
        nested = _model_in(info.annotation)
        if nested is None:
            return []
        current = nested
    return sorted(info.alias or name for name, info in current.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, itself or inside Optional, list or dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None), None)
