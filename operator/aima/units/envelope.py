"""The request and response envelope of the seeds, and `execute`, which every door calls.

Request `{type, unit, input, options{timeout_seconds, trace_id}}` -> response `{success, data,
error{code, message, details}, meta{request_id, duration_ms, trace_id}}`. Field names are snake_case
as the seeds write them; `data` is the unit's output model serialized camelCase like the custom
resources it describes. The seeds' `async` option is not offered: what takes long (a download, a
rollout, a pipeline run) is a custom resource whose status the caller reads, so every call returns
when the unit has done its part.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from typing import Any

import aiohttp
from pydantic import BaseModel, Field, ValidationError

from aima.api.common import Keys
from aima.kube import KubeError, resources
from aima.units.core import Context, Kind, Registry, Unit
from aima.units.errors import ErrorCode, UnitError, first_error

__all__ = [
    "ErrorInfo",
    "Meta",
    "Options",
    "Request",
    "Response",
    "execute",
    "from_kube_error",
    "new_request_id",
]

_log = logging.getLogger(__name__)


class Options(BaseModel):
    """How to run a call."""

    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    """Give up after this long with TIMEOUT; none waits as long as the unit takes."""
    trace_id: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    """An id of the caller's to find this call by: echoed in meta and written to the log."""


class Request(BaseModel):
    """One call of a unit."""

    type: Kind | None = None
    """command or query; when given it must match the unit's kind."""
    unit: str = Field(max_length=128)
    """The unit's name, such as model.list."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The unit's input, as its input schema describes."""
    options: Options = Options()


class ErrorInfo(BaseModel):
    """Why a call failed."""

    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None

    @classmethod
    def of(cls, failure: UnitError) -> ErrorInfo:
        """The wire form of a unit error."""
        return cls(code=failure.code, message=failure.message, details=failure.details)


class Meta(BaseModel):
    """About the call itself."""

    request_id: str
    duration_ms: int
    unit: str | None = None
    trace_id: str | None = None


class Response(BaseModel):
    """The outcome of one call: `data` on success, `error` otherwise."""

    success: bool
    data: Any = None
    error: ErrorInfo | None = None
    meta: Meta

    def dump(self) -> dict[str, Any]:
        """The JSON form, without the member that does not apply."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"data"} if not self.success else None)


async def execute(registry: Registry, context: Context, request: Request) -> Response:
    """Run one request; never raises: every failure becomes an error envelope with a stable code."""
    started = time.monotonic()
    request_id = new_request_id()
    trace = request.options.trace_id
    if trace:
        _log.info("Unit call unit=%s request_id=%s trace_id=%s", request.unit, request_id, trace)
    try:
        async with asyncio.timeout(request.options.timeout_seconds):
            data = await _run(registry, context, request)
        success, error = True, None
    except UnitError as failure:
        data, success = None, False
        error = ErrorInfo.of(failure)
    except TimeoutError:
        data, success = None, False
        limit = request.options.timeout_seconds
        error = ErrorInfo(code=ErrorCode.TIMEOUT, message=f"{request.unit} did not finish within {limit:g} s")
    meta = Meta(
        request_id=request_id,
        duration_ms=round((time.monotonic() - started) * 1000),
        unit=request.unit,
        trace_id=trace,
    )
    return Response(success=success, data=data, error=error, meta=meta)


def new_request_id() -> str:
    """A fresh id for meta.request_id: `req_` and 16 hex digits."""
    return f"req_{secrets.token_hex(8)}"


async def _run(registry: Registry, context: Context, request: Request) -> Any:
    unit = registry.get(request.unit)
    if unit is None:
        raise UnitError(
            ErrorCode.UNIT_NOT_FOUND,
            f"No unit named {request.unit}; GET /api/v2/units lists them",
            {"unit": request.unit},
        )
    if request.type is not None and request.type is not unit.kind:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"{unit.name} is a {unit.kind}, not a {request.type}",
            {"unit": unit.name, "type": str(unit.kind)},
        )
    try:
        parsed = unit.input.model_validate(_scoped(unit, context, request.input))
        await _require_namespace(context, parsed)
        acting = context if context.registry is registry else dataclasses.replace(context, registry=registry)
        output = await unit.handler(acting, parsed)
    except ValidationError as invalid:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"Invalid input for {unit.name}: {first_error(invalid, model=unit.input)}",
            {"errors": invalid.errors(include_url=False, include_context=False, include_input=False)},
        ) from invalid
    except KubeError as refused:
        raise from_kube_error(refused) from refused
    except (aiohttp.ClientError, TimeoutError) as unreachable:
        raise UnitError(
            ErrorCode.UNAVAILABLE, f"The API server could not be reached: {unreachable}"
        ) from None
    except UnitError:
        raise
    except Exception as crash:
        _log.exception("Unit failed unexpectedly unit=%s", unit.name)
        raise UnitError(ErrorCode.INTERNAL, f"{unit.name} failed: {type(crash).__name__}") from crash
    return _trimmed(output.model_dump(mode="json", by_alias=True, exclude_none=True))


# kopf's annotations (ours under Keys.KOPF_PREFIX, other kopf operators' under kopf.*) stay noise
# although the operator no longer runs kopf: objects written while it did may still carry them.
_NOISE = ("kopf.", Keys.KOPF_PREFIX, "kubectl.kubernetes.io/last-applied-configuration")


def _trimmed(data: dict[str, Any]) -> dict[str, Any]:
    """The output without the API server's and other tools' bookkeeping (managedFields, kopf's and
    kubectl's annotations) and without a condition's message said again by the next: nobody acts on
    them, and they cost an agent's context more than the object itself."""
    _said_once(data.get("status"))
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        return data
    metadata.pop("managedFields", None)
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if not k.startswith(_NOISE)}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return data


def _said_once(status: Any) -> None:
    """Conditions that repeat an earlier condition's message point to it instead (Ready, Scheduled
    and Reconciling often explain one wait in the same words)."""
    first: dict[str, str] = {}
    for condition in status.get("conditions", []) if isinstance(status, dict) else []:
        message = condition.get("message")
        if message and message in first:
            condition["message"] = f"As {first[message]}"
        elif message:
            first[message] = str(condition.get("type"))


def _scoped(unit: Unit[Any, Any], context: Context, raw: dict[str, Any]) -> dict[str, Any]:
    """The input with the namespace made explicit, when the context allows only some namespaces.

    Every unit that acts in a namespace has a `namespace` input (empty: the default one), so the
    doors can keep an agent inside its allow-list without knowing the unit.
    """
    if context.namespaces is None:
        return raw
    fields = unit.input.model_fields
    if "all_namespaces" in fields and (raw.get("allNamespaces") or raw.get("all_namespaces")):
        raise UnitError(
            ErrorCode.FORBIDDEN,
            f"Only namespaces {', '.join(sorted(context.namespaces))} are allowed here; drop allNamespaces",
            {"allowed": sorted(context.namespaces)},
        )
    if "namespace" not in fields:
        return raw
    namespace = raw.get("namespace") or context.namespace
    if namespace not in context.namespaces:
        raise UnitError(
            ErrorCode.FORBIDDEN,
            f"Namespace {namespace} is not allowed here; allowed: {', '.join(sorted(context.namespaces))}",
            {"namespace": namespace, "allowed": sorted(context.namespaces)},
        )
    return raw | {"namespace": namespace}


async def _require_namespace(context: Context, parsed: BaseModel) -> None:
    """NAMESPACE_NOT_FOUND at the first call that names a namespace that does not exist: a list of it
    would read as empty and a budget as free, until the first write failed with a bare 404."""
    if "namespace" not in type(parsed).model_fields or getattr(parsed, "all_namespaces", False):
        return
    namespace = context.namespace_of(getattr(parsed, "namespace", None))
    if namespace in context.known_namespaces:
        return
    try:
        found = await context.kube.get(resources.NAMESPACES, name=namespace)
    except KubeError as refused:
        if refused.status in (401, 403):
            return  # a caller who may not read namespaces gets the API server's word at its write
        raise
    if found is not None:
        context.known_namespaces.add(namespace)
        return
    raise UnitError(
        ErrorCode.NAMESPACE_NOT_FOUND,
        f"Namespace {namespace} does not exist; name one that does (resource_overview lists them with "
        f"what runs there), or create it first (kubectl create namespace {namespace})",
        {"namespace": namespace},
    )


def from_kube_error(error: KubeError) -> UnitError:
    """The unit error for an API server refusal (validation, conflict, RBAC, outage)."""
    details = {"status": error.status, "reason": error.reason}
    if error.status == 409:
        return UnitError(ErrorCode.CONFLICT, error.message, details)
    if error.status in (400, 422):
        return UnitError(ErrorCode.INVALID_INPUT, error.message, details)
    if error.status == 401:
        return UnitError(ErrorCode.UNAUTHORIZED, error.message, details)
    if error.status == 403:
        return UnitError(ErrorCode.FORBIDDEN, error.message, details)
    if error.status == 404:
        return UnitError(ErrorCode.NOT_FOUND, error.message or "Not found", details)
    if error.status >= 500 or error.status == 429:
        return UnitError(ErrorCode.UNAVAILABLE, error.message, details)
    return UnitError(ErrorCode.INTERNAL, error.message, details)
