"""`aima mcp serve`: the MCP door over stdio (default) or streamable HTTP at /mcp."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import click
import uvicorn

from aima.doors.mcp import McpDoor, Policy
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, registry

__all__ = ["mcp"]


@click.group()
def mcp() -> None:
    """The MCP server: one tool per unit, resources such as aima://services/{name}."""


@mcp.command("serve")
@click.option(
    "--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
    help="stdio for a local agent; http serves streamable HTTP at /mcp.",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (http).")
@click.option("--port", default=8081, show_default=True, type=int, help="Port to listen on (http).")
@click.option("--read-only", is_flag=True, help="Offer only queries (tools with readOnlyHint).")
@click.option("--no-destructive", is_flag=True, help="Leave out destructive tools (deletes, stops).")
@click.option("--namespace", default="default", show_default=True, help="Namespace when a call names none.")
@click.option(
    "--allow-namespace", "allowed", multiple=True,
    help="Allow units to act only in this namespace (repeat for more); every namespace when none.",
)  # fmt: skip
@click.option(
    "--allowed-host", "allowed_hosts", multiple=True,
    help="Host header accepted (http), such as aima-mcp.aima.svc and aima-mcp.aima.svc:*; loopback only "
    "when none.",
)  # fmt: skip
@click.option("--no-host-check", is_flag=True, help="Accept any Host header (behind a trusted proxy).")
@click.option("--stateless", is_flag=True, help="No sessions (http): any replica answers any request.")
@click.option(
    "--api-key", "api_keys", multiple=True, envvar="AIMA_MCP_API_KEYS",
    help="A key clients present as a Bearer token (http; repeat for more; AIMA_MCP_API_KEYS, "
    "space-separated). Required for http unless --no-auth.",
)  # fmt: skip
@click.option(
    "--no-auth", is_flag=True, help="Serve http without keys (only behind a proxy that authenticates)."
)
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
@click.option(
    "--gateway-url", envvar="AIMA_GATEWAY_URL",
    help="The OpenAI gateway that inference_* tools call, such as http://127.0.0.1:8080 (aima dev up); "
    "the in-cluster Service address when none.",
)  # fmt: skip
def serve(
    transport: str,
    host: str,
    port: int,
    read_only: bool,
    no_destructive: bool,
    namespace: str,
    allowed: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    no_host_check: bool,
    stateless: bool,
    api_keys: tuple[str, ...],
    no_auth: bool,
    kubeconfig: Path | None,
    gateway_url: str | None,
) -> None:
    """Serve the units to MCP clients. In stdio mode stdout carries only the protocol; logs go to
    stderr."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    settings = Settings.from_env()
    if gateway_url:
        settings = settings.model_copy(update={"gateway_url": gateway_url})

    async def context() -> Context:
        kube = await connect(kubeconfig=kubeconfig or settings.kubeconfig)
        return Context(kube=kube, settings=settings, namespace=namespace)

    policy = Policy(
        read_only=read_only,
        allow_destructive=not no_destructive,
        namespaces=frozenset(allowed) if allowed else None,
    )
    door = McpDoor(registry(), connect=context, policy=policy, namespace=namespace)
    if transport == "stdio":
        anyio.run(door.serve_stdio)
        return
    keys = tuple(key for key in api_keys if key.strip())
    if not keys and not no_auth:
        raise click.UsageError("streamable HTTP needs --api-key (or AIMA_MCP_API_KEYS), or --no-auth")
    app = door.http_app(
        host=host,
        allowed_hosts=allowed_hosts,
        check_host=not no_host_check,
        stateless=stateless,
        api_keys=() if no_auth else keys,
    )
    click.echo(f"Serving MCP on http://{host}:{port}/mcp", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
