"""`aima model pull SOURCE --wait`: create a Model and show its download as a progress bar.

The bar is fed by the Model's status (bytes done and total, speed, ETA), read once a second from the
API server: the CLI shows what every other client sees, not a private channel to the loader.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from aima.api.common import ConditionStatus
from aima.api.model import Model, ModelPhase, ModelType
from aima.cli.units_cmd import EXIT_CODES, finish, output_flag, session
from aima.units import Context, Request, Response, execute, registry
from aima.units.envelope import ErrorInfo, Meta
from aima.units.errors import ErrorCode
from aima.units.shared import ready

__all__ = ["model", "name_from_source"]


@click.group()
def model() -> None:
    """Models: weights AIMA downloads into a volume (see also `aima exec model.*`)."""


@model.command(epilog=EXIT_CODES)
@click.argument("source")
@click.option("--name", help="Name of the Model; derived from the source when empty.")
@click.option(
    "--type", "type_", type=click.Choice([t.value for t in ModelType]), default="LLM", show_default=True,
    help="What the model does.",
)  # fmt: skip
@click.option("--namespace", "-n", help="Namespace; the kubeconfig's default namespace when empty.")
@click.option("--wait/--no-wait", default=False, help="Show the download and return once the Model is Ready.")
@click.option("--timeout", default=3600, show_default=True, type=int, help="Seconds to wait with --wait.")
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
@output_flag
@click.pass_context
def pull(
    ctx: click.Context,
    source: str,
    name: str | None,
    type_: str,
    namespace: str | None,
    wait: bool,
    timeout: int,
    kubeconfig: Path | None,
    output_format: str,
) -> None:
    """Download a model, e.g. `aima model pull hf://Qwen/Qwen3-0.6B --wait`."""
    given = {"name": name or name_from_source(source), "source": source, "type": type_}
    if namespace:
        given["namespace"] = namespace
    as_json = output_format == "json"
    response = asyncio.run(_pull(given, kubeconfig=kubeconfig, wait=wait, timeout=timeout, show=not as_json))
    finish(ctx, response, as_json=as_json)


def name_from_source(source: str) -> str:
    """A Model name from a source URI: hf://Qwen/Qwen3-0.6B@main -> qwen3-0.6b (pure)."""
    tail = source.split("://", 1)[-1].split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9.-]+", "-", tail.lower().replace(":", "-")).strip("-.")
    return name[:63].rstrip("-.") or "model"


async def _pull(
    given: dict[str, Any], *, kubeconfig: Path | None, wait: bool, timeout: float, show: bool
) -> Response:
    async with session(kubeconfig) as context:
        if isinstance(context, Response):
            return context
        response = await execute(registry(), context, Request(unit="model.pull", input=given))
        if not wait or response.error is not None:
            return response
        return await _watch(context, Model.model_validate(response.data), timeout=timeout, show=show)


async def _watch(context: Context, model: Model, *, timeout: float, show: bool) -> Response:
    name, namespace = model.metadata.name or "", model.metadata.namespace
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), disable=not show, transient=False) as bar:
        task = bar.add_task(f"{name}: waiting", total=None)
        while True:
            got = await execute(
                registry(), context, Request(unit="model.get", input={"name": name, "namespace": namespace})
            )
            if got.error is not None:
                return got
            model = Model.model_validate(got.data)
            status = model.status
            progress = status.progress if status else None
            phase = status.phase if status and status.phase else ModelPhase.PENDING
            if progress is not None:
                bar.update(task, completed=progress.bytes_done, total=progress.bytes_total)
            bar.update(task, description=f"{name}: {phase}")
            condition = ready(status.conditions if status else [])
            if condition is not None and condition.status == ConditionStatus.TRUE:
                return got
            if phase == ModelPhase.FAILED:
                return _failed(
                    got, ErrorCode.INTERNAL, f"Model {name} failed: {condition.message if condition else ''}"
                )
            if time.monotonic() >= deadline:
                why = condition.message if condition else "no status yet"
                return _failed(
                    got, ErrorCode.TIMEOUT, f"Model {name} was not Ready after {timeout:g}s: {why}"
                )
            await asyncio.sleep(1)


def _failed(last: Response, code: ErrorCode, message: str) -> Response:
    meta = Meta(request_id=last.meta.request_id, duration_ms=last.meta.duration_ms, unit="model.pull")
    return Response(success=False, error=ErrorInfo(code=code, message=message), meta=meta)
