"""`aima service logs NAME [-f]`: the engine logs of a service's replicas, followed with -f."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from aima.cli.units_cmd import EXIT_CODES, call, finish, session
from aima.kube import KubeError
from aima.units import Context, Response
from aima.units.service import log_params, replica_pods
from aima.units.shared import follow_pod_log

__all__ = ["service"]


@click.group()
def service() -> None:
    """InferenceServices (see also `aima exec service.*`)."""


@service.command(epilog=EXIT_CODES)
@click.argument("name")
@click.option("--namespace", "-n", help="Namespace; the kubeconfig's default namespace when empty.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until interrupted.")
@click.option("--tail", default=100, show_default=True, type=int, help="Last lines of each replica.")
@click.option("--since", "since_seconds", type=int, help="Only lines of the last seconds.")
@click.option("--previous", "-p", is_flag=True, help="The previous (crashed) container's log.")
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
@click.pass_context
def logs(
    ctx: click.Context,
    name: str,
    namespace: str | None,
    follow: bool,
    tail: int,
    since_seconds: int | None,
    previous: bool,
    kubeconfig: Path | None,
) -> None:
    """Print the engine log of every replica, each line prefixed with its pod when there are several."""
    if follow:
        response = asyncio.run(
            _follow(name, namespace, tail=tail, since_seconds=since_seconds, kubeconfig=kubeconfig)
        )
        if response is not None:
            finish(ctx, response, as_json=False)
        return
    given: dict[str, object] = {"name": name, "tail": tail, "previous": previous}
    given |= {k: v for k, v in {"namespace": namespace, "sinceSeconds": since_seconds}.items() if v}
    response = asyncio.run(call("service.logs", given, kubeconfig=kubeconfig))
    if response.error is not None:
        finish(ctx, response, as_json=False)
        return
    pods = response.data["pods"]
    for pod in pods:
        prefix = f"[{pod['pod']}] " if len(pods) > 1 else ""
        if "error" in pod:
            click.echo(f"{prefix}(no log: {pod['error']})", err=True)
        for line in pod.get("lines", []):
            click.echo(prefix + line)
    if not pods:
        click.echo(response.data.get("message", "No replicas"), err=True)


async def _follow(
    name: str, namespace: str | None, *, tail: int, since_seconds: int | None, kubeconfig: Path | None
) -> Response | None:
    # The unit answers once; following is a stream, so the CLI reads the pods' logs itself, with the
    # same selection of pods and container the unit uses.
    checked = await call("service.get", {"name": name, "namespace": namespace}, kubeconfig=kubeconfig)
    if checked.error is not None:
        return checked
    async with session(kubeconfig) as context:
        if isinstance(context, Response):
            return context
        space = context.namespace_of(namespace)
        pods = await replica_pods(context, name=name, namespace=space)
        if not pods:
            click.echo(f"InferenceService {name} has no replicas yet", err=True)
            return None
        params = log_params(tail=tail, since_seconds=since_seconds, previous=False)
        names = [p["metadata"]["name"] for p in pods]
        await asyncio.gather(
            *(_print_lines(context, space, pod, params, prefix=len(names) > 1) for pod in names)
        )
    return None


async def _print_lines(
    context: Context, namespace: str, pod: str, params: dict[str, str], *, prefix: bool
) -> None:
    try:
        async for line in follow_pod_log(context.kube, namespace=namespace, pod=pod, params=params):
            click.echo(f"[{pod}] {line}" if prefix else line)
    except KubeError as refused:
        click.echo(f"[{pod}] (no log: {json.dumps(refused.message or refused.reason)})", err=True)
