"""`aima pipeline run <name> --input audio=@question.wav`: run a Pipeline with live per-step progress.

The run is a PipelineRun executed by the operator; this command creates it (pipeline.run), follows
its status, prints the outputs and writes binary ones (audio) from the run's Secret to files.
Ctrl-C cancels the run. The other pipeline.* units are under `aima exec pipeline.<action>`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from aima.api.pipeline import Pipeline, PipelineRun, ValueType
from aima.domain.pipeline_status import finished
from aima.kube import KubeClient, connect, resources
from aima.settings import Settings
from aima.units import Context, Request, execute, registry
from aima.units.pipeline import RunSummary, summarize

__all__ = ["pipeline_group"]

_BINARY = frozenset({ValueType.AUDIO, ValueType.IMAGE})
_EXTENSIONS = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/ogg": ".ogg"}
"""Extensions Python's mimetypes does not know (or names oddly)."""
_COLOURS = {
    "Succeeded": "green",
    "Failed": "red",
    "Running": "yellow",
    "Skipped": "dim",
    "Cancelled": "magenta",
}


@click.group("pipeline")
def pipeline_group() -> None:
    """Run Pipelines with live progress (the other pipeline.* units: aima exec pipeline.<action>)."""


@pipeline_group.command("run")
@click.argument("name")
@click.option(
    "--input", "-i", "inputs", multiple=True, metavar="NAME=VALUE", help="An input; NAME=@FILE reads a file."
)
@click.option(
    "--config", "-c", "config", multiple=True, metavar="KEY=VALUE", help="A config override (JSON or text)."
)
@click.option("--namespace", "-n", default=None, help="Namespace of the Pipeline.")
@click.option("--timeout", type=int, default=None, help="Longest the run may take, in seconds.")
@click.option(
    "--output-dir", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path(),
    show_default=True, help="Where binary outputs (audio) are written, as <output>.<ext>.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the final run summary as JSON.")
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
def run_command(as_json: bool, **options: Any) -> None:
    """Run the Pipeline NAME, e.g. aima pipeline run voice-assistant --input audio=@question.wav"""
    asked = _RunOptions(**options)
    console = Console(stderr=True)
    state: dict[str, str] = {}
    try:
        summary = asyncio.run(_run(asked, console, state))
    except KeyboardInterrupt:
        if "run" in state:
            asyncio.run(_cancel(state["run"], state["namespace"], asked.kubeconfig))
            console.print(f"Cancelled {state['run']}")
        raise SystemExit(130) from None
    if as_json:
        click.echo(json.dumps(summary.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    else:
        _print_outputs(summary, console)
    raise SystemExit(0 if summary.phase == "Succeeded" else 1)


@dataclass(frozen=True)
class _RunOptions:
    """What `aima pipeline run` was asked, as its options name it."""

    name: str
    inputs: tuple[str, ...]
    config: tuple[str, ...]
    namespace: str | None
    timeout: int | None
    output_dir: Path
    kubeconfig: Path | None


async def _run(asked: _RunOptions, console: Console, state: dict[str, str]) -> RunSummary:
    settings = Settings.from_env()
    kube = await connect(kubeconfig=asked.kubeconfig or settings.kubeconfig)
    try:
        context = Context(kube=kube, settings=settings, namespace=asked.namespace or "default")
        pipeline = await _pipeline(kube, asked.name, context.namespace)
        request = {
            "name": asked.name,
            "namespace": context.namespace,
            "inputs": _inputs(pipeline, asked.inputs),
            "config": dict(_pair(c, parse_json=True) for c in asked.config),
            "wait": False,
        } | ({"timeoutSeconds": asked.timeout} if asked.timeout else {})
        response = await execute(registry(), context, Request(unit="pipeline.run", input=request))
        if response.error is not None:
            raise click.ClickException(f"{response.error.code}: {response.error.message}")
        state |= {"run": response.data["run"], "namespace": context.namespace}
        summary = await _follow(kube, state["run"], context.namespace, console)
        await _write_binary(kube, summary, asked.output_dir, console)
        return summary
    finally:
        await kube.close()


async def _pipeline(kube: KubeClient, name: str, namespace: str) -> Pipeline:
    body = await kube.get(resources.PIPELINES, name=name, namespace=namespace)
    if body is None:
        raise click.ClickException(f"Pipeline {name} not found in namespace {namespace}")
    return Pipeline.model_validate(body)


def _inputs(pipeline: Pipeline, given: tuple[str, ...]) -> dict[str, Any]:
    types = {i.name: i.type for i in pipeline.spec.inputs}
    values: dict[str, Any] = {}
    for item in given:
        key, value = _pair(
            item, parse_json=types.get(item.partition("=")[0]) in (ValueType.JSON, ValueType.NUMBER)
        )
        if isinstance(value, str) and value.startswith("@"):
            data = Path(value[1:]).expanduser().read_bytes()
            value = base64.b64encode(data).decode() if types.get(key) in _BINARY else data.decode()
        values[key] = value
    return values


def _pair(item: str, *, parse_json: bool) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: expected NAME=VALUE")
    if parse_json and not value.startswith("@"):
        try:
            return key, json.loads(value)
        except json.JSONDecodeError:
            return key, value
    return key, value


async def _follow(kube: KubeClient, name: str, namespace: str, console: Console) -> RunSummary:
    started = time.monotonic()
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            body = await kube.get(resources.PIPELINE_RUNS, name=name, namespace=namespace)
            if body is None:
                raise click.ClickException(f"PipelineRun {name} disappeared")
            run = PipelineRun.model_validate(body)
            summary = summarize(run)
            live.update(_table(summary, time.monotonic() - started))
            if finished(run.status):
                return summary
            await asyncio.sleep(0.25)


def _table(summary: RunSummary, elapsed: float) -> Table:
    table = Table(title=f"{summary.run}: {summary.phase} ({elapsed:.1f} s)", box=None, title_justify="left")
    table.add_column("Step")
    table.add_column("Phase")
    table.add_column("Time", justify="right")
    table.add_column("Detail", overflow="fold")
    for step in summary.steps:
        colour = _COLOURS.get(step.phase, "white")
        took = f"{step.duration_ms} ms" if step.duration_ms is not None else ""
        detail = step.error or _glimpse(step.output)
        table.add_row(step.id, f"[{colour}]{step.phase}[/]", took, detail)
    if summary.message and summary.phase in ("Failed", "Cancelled", "Pending"):
        table.caption = summary.message
    return table


def _glimpse(output: dict[str, Any] | None) -> str:
    if not output:
        return ""
    text = output.get("text") or output.get("content")
    return str(text)[:80] if text else ", ".join(sorted(output))[:80]


async def _write_binary(kube: KubeClient, summary: RunSummary, output_dir: Path, console: Console) -> None:
    for name, value in (summary.outputs or {}).items():
        reference = value.get("secretKeyRef") if isinstance(value, dict) else None
        if reference is None:
            continue
        secret = await kube.get(resources.SECRETS, name=reference["name"], namespace=summary.namespace)
        encoded = (secret or {}).get("data", {}).get(reference["key"])
        if encoded is None:
            continue
        content_type = str(value.get("contentType") or "").partition(";")[0]
        extension = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / f"{name}{extension}"
        path.write_bytes(base64.b64decode(encoded))
        console.print(f"Wrote {path} ({value.get('bytes')} bytes)")


def _print_outputs(summary: RunSummary, console: Console) -> None:
    for name, value in (summary.outputs or {}).items():
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        Console().print(f"[bold]{name}[/]: {shown}")
    if summary.phase != "Succeeded":
        console.print(f"[red]{summary.reason}[/]: {summary.message}")


async def _cancel(run: str, namespace: str, kubeconfig: Path | None) -> None:
    settings = Settings.from_env()
    kube = await connect(kubeconfig=kubeconfig or settings.kubeconfig)
    try:
        context = Context(kube=kube, settings=settings, namespace=namespace)
        await execute(registry(), context, Request(unit="pipeline.cancel", input={"run": run}))
    finally:
        await kube.close()
