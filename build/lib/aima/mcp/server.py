"""The MCP door: one tool per unit and one resource per address, generated from the registry.

Tools are named after their unit (`model.pull` -> `model_pull`); their input and output schemas are
the unit's models, their hints the unit's (queries read-only; deletes and stops destructive;
nothing here reaches outside the cluster, so open-world is false). A call goes through `execute`
like every other door, so validation, error codes and the namespace allow-list are the same
everywhere; a failure comes back as a tool error whose text starts with its stable code.

A `Policy` narrows what an agent sees: read-only mode offers only queries, `allow_destructive=False`
drops destructive commands, and an allow-list of namespaces confines every namespaced unit.
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
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict

from aima import __version__
from aima.units.core import Context, Registry, Unit
from aima.units.envelope import Request, Response, execute
from aima.units.uris import Address, offered

__all__ = ["Policy", "build_server", "offered_units", "tool_name"]

INSTRUCTIONS = """AIMA runs inference services on Kubernetes GPU nodes. Models are weights (model_pull
downloads them), InferenceServices serve a Model on an Engine (service_create, service_scale); their
status conditions say in words why they are not ready (service_get, or the aima://services/{name}
resource). Errors start with a stable code such as MODEL_NOT_FOUND or INSUFFICIENT_RESOURCES."""


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
        if self.read_only:
            return unit.read_only
        return self.allow_destructive or not unit.destructive

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


def build_server(
    registry: Registry, context: Callable[[], Context], *, policy: Policy | None = None
) -> MCPServer[Any]:
    """An MCP server for `registry`; `context()` gives the Context to act through at call time (it
    is created on the server's event loop, after the server starts)."""
    policy = policy or Policy()

    def scoped() -> Context:
        return policy.scope(context())

    tools = [_tool(unit, registry, scoped) for unit in offered_units(registry, policy)]
    server: MCPServer[Any] = MCPServer(
        name="aima", title="AIMA", version=__version__, instructions=INSTRUCTIONS, tools=tools
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
        return _result(await execute(registry, acting, Request(unit=unit.name, input=arguments)))

    examples = "\n".join(f"- {e.description}: {json.dumps(dict(e.input))}" for e in unit.examples)
    metadata = FuncMetadata(
        arg_model=_Arguments,
        output_schema=unit.output.model_json_schema(by_alias=True, mode="serialization"),
    )
    return Tool(
        fn=call,
        name=tool_name(unit),
        title=unit.name,
        description=unit.description + (f"\n\nExamples:\n{examples}" if examples else ""),
        parameters=unit.input.model_json_schema(by_alias=True),
        fn_metadata=metadata,
        is_async=True,
        context_kwarg="mcp_context",
        annotations=ToolAnnotations(
            title=unit.name,
            read_only_hint=unit.read_only,
            destructive_hint=unit.destructive,
            idempotent_hint=unit.idempotent,
            open_world_hint=False,
        ),
    )


def _result(response: Response) -> CallToolResult:
    if response.error is None:
        text = json.dumps(response.data, separators=(",", ":"))
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=response.data)
    error = response.error
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
        case ("namespace", "name"):

            async def namespaced(namespace: str, name: str) -> str:
                return await read({"namespace": namespace, "name": name})

            return namespaced
    raise ValueError(f"{address.template}: no reader for parameters {address.parameters}")
