"""The CLI door: `aima exec <unit> --field value`, generated from the unit registry, plus `aima units`
(the catalog) and `aima api serve` (the HTTP door).

Options come from the unit's input model: one `--kebab-case` option per field, typed from its
annotation (objects and lists as JSON), documented by its description. Output is a rich table, or
the raw JSON `data` with `--json`. Exit codes follow the error code (see `aima.units.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import types
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table

from aima.doors.http import create_app
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, Request, Response, Unit, execute, registry
from aima.units.envelope import ErrorInfo, Meta
from aima.units.errors import ErrorCode, exit_code
from aima.units.schema import describe

__all__ = ["EXIT_CODES", "call", "exec_group", "finish", "output_flag", "output_option", "session", "table"]

_SCALARS: dict[Any, click.ParamType[Any]] = {str: click.STRING, int: click.INT, float: click.FLOAT}


def exec_group() -> click.Group:
    """`aima exec`: one subcommand per unit of the registry."""
    return ExecGroup(name="exec", help=_EXEC_HELP, params=[_kubeconfig_option()])


EXIT_CODES = """Exit codes: 0 done; 1 internal error; 2 invalid input or usage (also an unknown unit);
3 not found (model, engine, service, ...); 4 conflict (exists, or exists otherwise); 5 insufficient
resources; 6 unauthorized or forbidden; 7 timeout; 8 the cluster is unavailable."""

_EXEC_HELP = f"""Run one unit against the cluster of the current kubeconfig, e.g.

    aima exec model.list --all-namespaces

    aima exec service.scale --name qwen --replicas 2 --output json

\b
{EXIT_CODES}
"""


class ExecGroup(click.Group):
    """One subcommand per unit, built on demand from the registry."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [unit.name for unit in registry()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        unit = registry().get(cmd_name)
        return None if unit is None else _unit_command(unit)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON, with schemas.")
def units(as_json: bool) -> None:
    """List the units: what `aima exec`, the HTTP API and MCP offer."""
    catalog = list(registry())
    if as_json:
        click.echo(json.dumps([describe(u) for u in catalog], indent=2))
        return
    table = Table("Unit", "Type", "Hints", "Description", box=None)
    for unit in catalog:
        hints = "read-only" if unit.read_only else ("destructive" if unit.destructive else "")
        table.add_row(unit.name, str(unit.kind), hints, unit.description.split(". ")[0])
    Console().print(table)


@click.group()
def api() -> None:
    """The HTTP API of the units."""


@api.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--api-key", "api_keys", multiple=True, envvar="AIMA_API_KEYS",
    help="Accepted API key (repeat for more; AIMA_API_KEYS takes them space-separated). None: no auth.",
)  # fmt: skip
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
def serve(host: str, port: int, api_keys: tuple[str, ...], kubeconfig: Path | None) -> None:
    """Serve /api/v2 (execute, command, query, units), /openapi.json, /healthz and /metrics."""

    async def run() -> None:
        kube = await connect(kubeconfig=kubeconfig)
        context = Context(kube=kube, settings=Settings.from_env())
        runner = web.AppRunner(create_app(registry=registry(), context=context, api_keys=api_keys))
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            click.echo(f"Serving the units on http://{host}:{port}/api/v2", err=True)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await kube.close()

    asyncio.run(run())


def _kubeconfig_option() -> click.Option:
    return click.Option(
        ["--kubeconfig"],
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="KUBECONFIG",
        help="Kubeconfig to use; $KUBECONFIG, then ~/.kube/config, when empty.",
    )


_FORMATS = click.Choice(["table", "json"])
_OUTPUT_HELP = "table for people; json prints the unit's data (on failure, the error envelope on stderr)."


def output_option() -> click.Option:
    """`-o/--output table|json`: rich tables for people, the JSON data for scripts."""
    return click.Option(
        ["-o", "--output", "output_format"],
        type=_FORMATS,
        default="table",
        show_default=True,
        help=_OUTPUT_HELP,
    )


output_flag = click.option(
    "-o", "--output", "output_format", type=_FORMATS, default="table", show_default=True, help=_OUTPUT_HELP
)
"""The same option as a decorator, for the hand-written daily commands."""


def _unit_command(unit: Unit[Any, Any]) -> click.Command:
    params: list[click.Parameter] = [_option(name, field) for name, field in unit.input.model_fields.items()]
    params.append(output_option())
    params.append(click.Option(["--json", "as_json"], is_flag=True, help="Same as --output json."))
    params.append(click.Option(["--input", "raw_input"], help="The whole input as a JSON object."))

    @click.pass_context
    def callback(
        ctx: click.Context, /, output_format: str, as_json: bool, raw_input: str | None, **fields: Any
    ) -> None:
        given = _input_object(raw_input)
        if isinstance(given, Response):
            finish(ctx, given, as_json=as_json or output_format == "json")
            return
        given |= {name: value for name, value in fields.items() if value is not None}
        response = asyncio.run(call(unit.name, given, kubeconfig=_parent_kubeconfig(ctx)))
        finish(ctx, response, as_json=as_json or output_format == "json")

    hints = "read-only" if unit.read_only else ("destructive" if unit.destructive else str(unit.kind))
    examples = "\n\n".join(f"{e.description}: {json.dumps(dict(e.input))}" for e in unit.examples)
    return click.Command(
        unit.name,
        params=params,
        callback=callback,
        help=f"{unit.description} ({hints})\n\nExamples (as --input):\n\n{examples}",
        short_help=unit.description.split(". ")[0],
    )


def _option(name: str, field: FieldInfo) -> click.Option:
    flag = "--" + name.replace("_", "-")
    kind = _strip_optional(field.annotation)
    # Required fields are checked by the input model, so --input can supply them too.
    help_text = (field.description or "").replace("\n", " ") + (" [required]" if field.is_required() else "")
    if kind is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choice = click.Choice([str(m.value) for m in kind])
        return click.Option([flag, name], type=choice, help=help_text)
    if kind in _SCALARS:
        return click.Option([flag, name], type=_SCALARS[kind], help=help_text)
    return click.Option([flag, name], callback=_parse_json, help=f"{help_text} (JSON)")


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _parse_json(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise click.BadParameter(f"not JSON: {value}") from None


def _input_object(raw: str | None) -> dict[str, Any] | Response:
    """``--input`` as a JSON object, or the INVALID_INPUT envelope saying what is wrong with it."""
    if not raw:
        return {}
    try:
        given = json.loads(raw)
    except json.JSONDecodeError as error:
        return _local_error(ErrorCode.INVALID_INPUT, f"--input is not JSON: {error}")
    if not isinstance(given, dict):
        return _local_error(
            ErrorCode.INVALID_INPUT, f'--input must be a JSON object such as {{"name": "qwen"}}: {raw}'
        )
    return given


def _local_error(code: ErrorCode, message: str) -> Response:
    """A failure found before any unit ran, in the envelope the units answer with."""
    error = ErrorInfo(code=code, message=message)
    return Response(success=False, error=error, meta=Meta(request_id="local", duration_ms=0))


def _parent_kubeconfig(ctx: click.Context) -> Path | None:
    parent = ctx.parent
    value = parent.params.get("kubeconfig") if parent is not None else None
    return Path(value) if value else None


async def call(unit: str, given: dict[str, Any], *, kubeconfig: Path | None) -> Response:
    """Run one unit against the cluster of `kubeconfig` (or the environment's) and close the connection."""
    async with session(kubeconfig) as context:
        if isinstance(context, Response):
            return context
        return await execute(registry(), context, Request(unit=unit, input=given))


@contextlib.asynccontextmanager
async def session(kubeconfig: Path | None) -> AsyncIterator[Context | Response]:
    """A Context on the cluster for the block, or the UNAVAILABLE envelope when login fails."""
    settings = Settings.from_env()
    try:
        kube = await connect(kubeconfig=kubeconfig or settings.kubeconfig)
    except Exception as failure:
        yield _local_error(ErrorCode.UNAVAILABLE, f"Could not log in to the cluster: {failure}")
        return
    try:
        yield Context(kube=kube, settings=settings)
    finally:
        await kube.close()


def finish(ctx: click.Context, response: Response, *, as_json: bool) -> None:
    """Print `response` and end with the exit code of its error, if any (see `aima.units.errors`)."""
    _print(response, as_json=as_json)
    if response.error is not None:
        ctx.exit(exit_code(response.error.code))


def _print(response: Response, *, as_json: bool) -> None:
    if response.error is not None:
        if as_json:
            click.echo(json.dumps(response.dump(), indent=2), err=True)
        else:
            Console(stderr=True).print(f"[red]{response.error.code}[/red]: {response.error.message}")
        return
    if as_json:
        click.echo(json.dumps(response.data, indent=2))
        return
    Console().print(table(response.data))


def table(data: Any) -> Table:
    items = data.get("items") if isinstance(data, dict) else None
    if isinstance(items, list):
        columns = list(dict.fromkeys(k for item in items for k in item))
        table = Table(*[c.upper() for c in columns], box=None)
        for item in items:
            table.add_row(*[_cell(item.get(c)) for c in columns])
        return table
    table = Table("FIELD", "VALUE", box=None, show_header=False)
    for key, value in (data or {}).items():
        table.add_row(key, _cell(value))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
