"""The MCP door fuzzed with the SDK's own client, against the real API server: every tool called with
arguments generated from its published input schema, arguments it refuses, and fields of any type.
No call is a protocol error or an unhandled exception; every failure is a tool error that starts
with a stable code, and a refused call names the field to fix."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.server import MCPServer
from mcp.types import CallToolResult

from aima.doors.mcp import build_server, tool_name
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, ErrorCode, registry
from aima_testenv import ControlPlane
from fuzzing import JSON, UNKNOWN_FIELD, Loop, fuzz, instances, odd, without_waits

pytestmark = pytest.mark.integration

UNITS = registry()
CATALOG = Path(__file__).resolve().parents[2] / "catalog"
CLOSED_PORT = "http://127.0.0.1:9"
"""The discard port, closed on test machines: where the gateway would be."""
_FAILURE = re.compile(r"^(?P<code>[A-Z_]+): (?P<message>\S.*)", re.DOTALL)


class Session:
    """An MCP client held open in a task of its own (anyio's scopes close in the task that opened
    them), for the synchronous examples of hypothesis to call through."""

    def __init__(self, loop: Loop, server: MCPServer[Any]) -> None:
        self._loop = loop
        self._calls: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[CallToolResult]] | None]
        self.schemas: dict[str, Any] = loop.run(self._start(server))

    def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call the tool `name` with `arguments`."""

        async def send() -> CallToolResult:
            done: asyncio.Future[CallToolResult] = asyncio.get_running_loop().create_future()
            await self._calls.put((name, arguments, done))
            return await done

        return self._loop.run(send())

    def close(self) -> None:
        self._loop.run(self._calls.put(None))
        self._loop.run(self._task)

    async def _start(self, server: MCPServer[Any]) -> dict[str, Any]:
        """The tools' input schemas by name, once the client is connected."""
        self._calls = asyncio.Queue()
        ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._serve(server, ready))
        return await ready

    async def _serve(self, server: MCPServer[Any], ready: asyncio.Future[dict[str, Any]]) -> None:
        try:
            async with Client(server, raise_exceptions=True) as client:
                ready.set_result({t.name: t.input_schema for t in (await client.list_tools()).tools})
                while (call := await self._calls.get()) is not None:
                    name, arguments, done = call
                    try:
                        done.set_result(await client.call_tool(name, arguments))
                    except Exception as error:  # raised in the example that made the call
                        done.set_exception(error)
        except Exception as error:
            if not ready.done():  # the client never connected: the fixture fails with why
                ready.set_exception(error)
            raise


@pytest.fixture
def mcp(aima_crds: ControlPlane, namespace: str) -> Iterator[Session]:
    """A client of the MCP door of every unit, acting in this test's namespace, with no gateway."""
    loop = Loop()
    settings = Settings(catalog_dir=CATALOG, gateway_url=CLOSED_PORT, unit_settle_seconds=0)
    kube = loop.run(connect(kubeconfig=aima_crds.kubeconfig))
    context = Context(kube=kube, settings=settings, namespace=namespace)
    try:
        session = Session(loop, build_server(UNITS, lambda: context, namespace=namespace))
        try:
            yield session
        finally:
            session.close()
    finally:
        loop.run(kube.close())
        loop.close()


def failure(result: CallToolResult) -> tuple[ErrorCode, str] | None:
    """The code and text of a tool error (asserting its shape), None for a result."""
    text = result.content[0].text  # type: ignore[union-attr]
    if not result.is_error:
        return None
    match = _FAILURE.match(text)
    assert match is not None, text
    code = ErrorCode(match["code"])
    assert code is not ErrorCode.INTERNAL, text
    return code, text


@pytest.mark.parametrize("unit", [u.name for u in UNITS])
def test_every_tool_answers_generated_arguments_with_a_result_or_a_typed_error(
    unit: str, mcp: Session, namespace: str
) -> None:
    name = tool_name(UNITS.get(unit))  # type: ignore[arg-type]
    schema = mcp.schemas[name]
    required = list(schema.get("required", ()))

    def call(arguments: dict[str, Any]) -> tuple[ErrorCode, str] | None:
        return failure(mcp.call(name, arguments))

    @fuzz(15)
    @given(arguments=instances(schema))
    def valid(arguments: dict[str, Any]) -> None:
        if "namespace" in schema["properties"]:
            arguments = arguments | {"namespace": namespace}  # a made-up one is only NAMESPACE_NOT_FOUND
        call(without_waits(arguments, schema))

    @fuzz(15)
    @given(arguments=instances(schema), extra=JSON, dropped=st.sampled_from([None, *required]))
    def refused(arguments: dict[str, Any], extra: Any, dropped: str | None) -> None:
        if dropped is None:
            arguments, field = arguments | {UNKNOWN_FIELD: extra}, UNKNOWN_FIELD
        else:
            arguments, field = {k: v for k, v in arguments.items() if k != dropped}, dropped
        failed = call(arguments)
        assert failed is not None and failed[0] is ErrorCode.INVALID_INPUT, failed
        assert field in failed[1], failed  # the field to fix is named

    @fuzz(15)
    @given(arguments=odd(schema))
    def any_fields(arguments: dict[str, Any]) -> None:
        call(without_waits(arguments, schema))

    valid()
    refused()
    any_fields()
