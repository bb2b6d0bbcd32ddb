"""`aima get KIND [NAME]`: the list or get query of a kind, like kubectl get with AIMA's columns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from aima.cli.units_cmd import EXIT_CODES, call, finish, output_flag

__all__ = ["KINDS", "get"]

# kind (and its aliases) -> (list query, get query); the units decide the columns.
KINDS: dict[str, tuple[str, str | None]] = {
    "models": ("model.list", "model.get"),
    "services": ("service.list", "service.get"),
    "engines": ("engine.list", "engine.get"),
    "gpus": ("resource.status", None),
}
_ALIASES = {
    "model": "models", "mdl": "models", "service": "services", "isvc": "services", "svc": "services",
    "inferenceservices": "services", "engine": "engines", "gpu": "gpus", "resources": "gpus",
}  # fmt: skip
_CLUSTER_SCOPED = {"engines", "gpus"}


@click.command(epilog=EXIT_CODES)
@click.argument("kind", type=click.Choice(sorted([*KINDS, *_ALIASES])), metavar="KIND")
@click.argument("name", required=False)
@click.option("--namespace", "-n", help="Namespace; the kubeconfig's default namespace when empty.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Every namespace (lists only).")
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), envvar="KUBECONFIG", help="Kubeconfig."
)
@output_flag
@click.pass_context
def get(
    ctx: click.Context,
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    kubeconfig: Path | None,
    output_format: str,
) -> None:
    """Show models, services, engines or GPUs: `aima get services -A`, `aima get model qwen3-8b -o json`."""
    plural = _ALIASES.get(kind, kind)
    list_unit, get_unit = KINDS[plural]
    scoped = plural not in _CLUSTER_SCOPED
    given: dict[str, object] = {"namespace": namespace} if namespace and scoped else {}
    if name is None and all_namespaces and scoped:
        given = {"allNamespaces": True}
    if name is not None:
        if get_unit is None:
            raise click.UsageError(f"{plural} take no name")
        given["name"] = name
    unit = get_unit if name is not None and get_unit is not None else list_unit
    finish(ctx, asyncio.run(call(unit, given, kubeconfig=kubeconfig)), as_json=output_format == "json")
