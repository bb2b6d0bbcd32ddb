"""The MCP door: one tool per unit and one resource per address, generated from the registry.

Tools are named after their unit (`model.pull` -> `model_pull`); their input schemas are the units'
models in compact form (`aima.units.schema.compact_schema`), their hints the unit's (queries
read-only; deletes and stops destructive). A call goes through `execute` like every other door, so
validation, error codes and the namespace allow-list are the same everywhere; a result is compact
JSON text within the agent's budget (`aima.doors.mcp.budget`), a failure a tool error whose text starts
with its stable code.

A `Policy` narrows what an agent sees: read-only mode offers only queries, `allow_destructive=False`
drops destructive commands, and an allow-list of namespaces confines every namespaced unit. A tool
the policy withholds is refused by name, with the reason and who can lift it; the instructions say
what the policy is before the first call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context as McpContext
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import ConfigDict

from aima import __version__
from aima.doors.mcp.budget import DETAIL, fit
from aima.units.core import Context, Registry, Unit
from aima.units.envelope import ErrorInfo, Request, Response, execute
from aima.units.errors import ErrorCode
from aima.units.schema import compact_schema
from aima.units.uris import Address, offered

__all__ = ["RESULT_LIMIT", "Policy", "build_server", "instructions", "offered_units", "tool_name"]

_ABOUT = """AIMA runs inference services on Kubernetes GPU nodes. Models are weights (model_pull downloads
them), InferenceServices serve a Model on an Engine (service_create, service_scale); their conditions
say in words why they are not ready (service_get). resource_overview answers "what runs, what is
free, what is wrong" in one call. No tool reaches outside the cluster. Errors start with a stable
code (MODEL_NOT_FOUND, INSUFFICIENT_RESOURCES, ...) and say what to do next."""

_CONVENTIONS = """Conventions: a tool's namespace is {namespace} when left empty{allowed}. Unknown
arguments are refused, naming the ones taken; a nested object's fields are named in its description.
Results are compact JSON cut to {limit:,} characters; add "detail": true to any call for all of it.
inference_* tools name a model as inference_models lists it: a service of the gateway's own namespace
by its name, one of another namespace as <namespace>/<name>."""

RESULT_LIMIT = 4000
"""Characters of a result an agent gets unless it asks for detail (its context is not free)."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What an agent may do through this server."""

    read_only: bool = False
    """Offer only queries (tools with readOnlyHint)."""
    allow_destructive: bool = True
    """Offer destructive commands (deletes, stops); ignored in read-only mode."""
    namespaces: frozenset[str] | None = None
    """The namespaces units may act in; None allows every namespace."""

    def offers(self, unit: Unit[Any, Any]) -> bool:
        """Whether `unit` is offered as a tool."""
        return self.refusal(unit) is None

    def refusal(self, unit: Unit[Any, Any]) -> str | None:
        """Why `unit` is withheld, in words that say what would lift it; None when it is offered."""
        if self.read_only and not unit.read_only:
            return (
                f"{tool_name(unit)} changes state, and this MCP server is read-only (aima mcp serve "
                "--read-only): it offers queries only. Whoever runs the server can restart it without "
                "--read-only."
            )
        if not self.read_only and unit.destructive and not self.allow_destructive:
            return (
                f"{tool_name(unit)} is destructive (it deletes or stops what others may use), and this MCP "
                "server leaves destructive tools out (aima mcp serve --no-destructive). Whoever runs the "
                "server can restart it without --no-destructive."
            )
        return None

    def mode(self) -> str:
        """This policy in one sentence, for the server's instructions."""
        if self.read_only:
            return "This server is read-only: it offers queries; every command is refused (FORBIDDEN)."
        if not self.allow_destructive:
            return "This server offers no destructive tools (deletes, stops): they are refused (FORBIDDEN)."
        return "This server offers every tool; destructive ones (deletes, stops) carry destructiveHint."

    def scope(self, context: Context) -> Context:
        """`context` confined to the allow-list, with an allowed default namespace."""
        if self.namespaces is None:
            return context
        default = context.namespace if context.namespace in self.namespaces else min(self.namespaces)
        return dataclasses.replace(context, namespace=default, namespaces=self.namespaces)


def tool_name(unit: Unit[Any, Any]) -> str:
    """The MCP tool name of a unit: `model.pull` -> `model_pull`."""
    return unit.name.replace(".", "_")


def offered_units(registry: Registry, policy: Policy) -> list[Unit[Any, Any]]:
    """The units `policy` offers as tools, by name."""
    return [u for u in registry if policy.offers(u)]


def instructions(policy: Policy, *, namespace: str) -> str:
    """What the server tells an agent before its first call: what AIMA is, what this server may do,
    and the conventions every tool shares (said once here rather than in each schema)."""
    allowed = f" (allowed: {', '.join(sorted(policy.namespaces))})" if policy.namespaces else ""
    conventions = _CONVENTIONS.format(namespace=namespace, allowed=allowed, limit=RESULT_LIMIT)
    return "\n\n".join((_ABOUT, policy.mode(), conventions))


class _Door(MCPServer[Any]):
    """The SDK's server, refusing a withheld tool by name and reason: an agent told "Unknown tool"
    cannot tell a typo from a policy, nor learn who can lift it."""

    def __init__(self, *, withheld: dict[str, str], **options: Any) -> None:
        super().__init__(**options)
        self._withheld = withheld

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: McpContext[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        if (why := self._withheld.get(name)) is not None:
            return _failed(ErrorInfo(code=ErrorCode.FORBIDDEN, message=why))
        return await super().call_tool(name, arguments, context)


def build_server(
    registry: Registry,
    context: Callable[[], Context],
    *,
    policy: Policy | None = None,
    namespace: str = "default",
) -> MCPServer[Any]:
    """An MCP server for `registry`; `context()` gives the Context to act through at call time (it
    is created on the server's event loop, after the server starts); `namespace` is the default one
    the instructions name."""
    policy = policy or Policy()

    def scoped() -> Context:
        return policy.scope(context())

    tools = [_tool(unit, registry, scoped) for unit in offered_units(registry, policy)]
    withheld = {tool_name(u): why for u in registry if (why := policy.refusal(u)) is not None}
    server = _Door(
        withheld=withheld,
        name="aima",
        title="AIMA",
        version=__version__,
        instructions=instructions(policy, namespace=namespace),
        tools=tools,
    )
    for address in offered(registry):
        _add_resource(server, address, registry, scoped)
    return server


class _Arguments(ArgModelBase):
    """Takes the arguments as sent: the unit's input model validates them in `execute`, in one place
    for every door, so an invalid call is an INVALID_INPUT error that names the field."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def model_dump_one_level(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _tool(unit: Unit[Any, Any], registry: Registry, context: Callable[[], Context]) -> Tool:
    async def call(mcp_context: McpContext[Any, Any], **arguments: Any) -> CallToolResult:
        # A long unit's reports reach the client as progress notifications (when it asked for them).
        acting = dataclasses.replace(context(), progress=mcp_context.report_progress)
        detail = arguments.pop(DETAIL, False) is True
        response = await execute(registry, acting, Request(unit=unit.name, input=arguments))
        return _result(response, limit=None if detail else RESULT_LIMIT)

    schema = compact_schema(unit.input)
    return Tool(
        fn=call,
        name=tool_name(unit),
        description=unit.description + _example(unit, schema),
        parameters=schema,
        # No output schema: the result is the JSON text alone, not that text and a structured copy.
        fn_metadata=FuncMetadata(arg_model=_Arguments),
        is_async=True,
        context_kwarg="mcp_context",
        annotations=_hints(unit),
    )


def _example(unit: Unit[Any, Any], schema: dict[str, Any]) -> str:
    """The first example of a command whose required arguments include an object or a list: their
    shape is what the compact schema leaves out (queries take plain filters, and a plain argument's
    type is all there is to know)."""
    required = [schema["properties"][name] for name in schema.get("required", ())]
    shaped = not unit.read_only and any(p.get("type") in ("object", "array") for p in required)
    example = json.dumps(dict(unit.examples[0].input), separators=(",", ":")) if unit.examples else ""
    return f"\nExample: {example}" if shaped and example else ""


def _hints(unit: Unit[Any, Any]) -> ToolAnnotations:
    """The unit's hints where they differ from MCP's defaults (not read-only, destructive, not
    idempotent). Open world is MCP's default too and false for every AIMA tool: the instructions say
    so once rather than every tool again."""
    if unit.read_only:
        return ToolAnnotations(read_only_hint=True)
    return ToolAnnotations(destructive_hint=unit.destructive, idempotent_hint=unit.idempotent or None)


def _result(response: Response, *, limit: int | None) -> CallToolResult:
    if response.error is not None:
        return _failed(response.error)
    text = fit(response.data, limit=limit) if limit else json.dumps(response.data, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)])


def _failed(error: ErrorInfo) -> CallToolResult:
    """A tool error: MCP's form of the units envelope, its text starting with the stable code."""
    text = f"{error.code}: {error.message}"
    if error.details:
        text += "\ndetails: " + json.dumps(error.details, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _add_resource(
    server: MCPServer[Any], address: Address, registry: Registry, context: Callable[[], Context]
) -> None:
    async def read(parameters: dict[str, str]) -> str:
        response = await execute(registry, context(), Request(unit=address.unit, input=parameters))
        if response.error is None:
            return json.dumps(response.data, separators=(",", ":"))
        message = f"{response.error.code}: {response.error.message}"
        if response.error.code.endswith("NOT_FOUND"):
            raise ResourceNotFoundError(message)
        raise ResourceError(message)

    register = server.resource(
        address.template,
        name=address.template.removeprefix("aima://"),
        description=address.description,
        mime_type="application/json",
    )
    register(_reader(address, read))


def _reader(
    address: Address, read: Callable[[dict[str, str]], Awaitable[str]]
) -> Callable[..., Awaitable[str]]:
    # The SDK matches a template's parameters to the function's, by name: one signature per shape.
    match address.parameters:
        case ():

            async def static() -> str:
                return await read({})

            return static
        case ("name",):

            async def named(name: str) -> str:
                return await read({"name": name})

            return named
        case ("namespace",):

            async def of_namespace(namespace: str) -> str:
                return await read({"namespace": namespace})

            return of_namespace
        case ("namespace", "name"):

            async def namespaced(namespace: str, name: str) -> str:
                return await read({"namespace": namespace, "name": name})

            return namespaced
    raise ValueError(f"{address.template}: no reader for parameters {address.parameters}")
