"""Entry point of the `aima` console script.

Subcommands are imported only when called: `aima loader` runs in every loader Job and
`aima device-agent` on every GPU node, and neither should pay for importing the controllers, the MCP
SDK and the unit registry (seconds of start-up and tens of MiB on a small pod).

Other installed projects add commands through entry points of the group ``aima.cli``: the
development install's `aima dev` comes from the test control plane (testenv/, the `aima-testenv`
project), which the image does not carry. They are looked up only for a name this package lacks.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable

import click

from aima import __version__

_COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("aima.cli.units_cmd", "api"),
    "device-agent": ("aima.cli.device_cmd", "device_agent"),
    "exec": ("aima.cli.units_cmd", "exec_group"),
    "gateway": ("aima.cli.gateway_cmd", "gateway_group"),
    "get": ("aima.cli.get_cmd", "get"),
    "loader": ("aima.loader.cli", "loader"),
    "mcp": ("aima.cli.mcp_cmd", "mcp"),
    "model": ("aima.cli.model_cmd", "model"),
    "operator": ("aima.cli.operator_cmd", "operator_group"),
    "pipeline": ("aima.cli.pipeline_cmd", "pipeline_group"),
    "service": ("aima.cli.service_cmd", "service"),
    "units": ("aima.cli.units_cmd", "units"),
}
"""Command name -> (module, attribute): a click command, or a function that builds one."""

PLUGINS = "aima.cli"
"""The entry-point group whose entries (name -> a click command) add commands to `aima`."""


@click.command(
    "dev",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
def _dev_needs_checkout() -> None:
    """Development helpers: only in the development install of a checkout."""
    raise click.ClickException(
        "`aima dev` needs the development install: in a checkout of AIMA run `make dev` "
        "(or hack/setup, then .venv/bin/aima dev up). This installation has only the shipped package "
        "(the image carries only what runs in the cluster)."
    )


def plugin_commands(entries: Iterable[importlib.metadata.EntryPoint]) -> dict[str, Callable[[], object]]:
    """Command name -> what loads it, for the entry points of :data:`PLUGINS`; where none of them
    adds `dev`, a stand-in that says where `aima dev` is. A plugin never replaces a built-in command."""
    commands: dict[str, Callable[[], object]] = {"dev": lambda: _dev_needs_checkout}
    commands.update((entry.name, entry.load) for entry in entries if entry.name not in _COMMANDS)
    return commands


@functools.cache
def _installed_plugins() -> dict[str, Callable[[], object]]:
    return plugin_commands(importlib.metadata.entry_points(group=PLUGINS))


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS.keys() | _installed_plugins().keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module, attribute = _COMMANDS[cmd_name]
            found = getattr(importlib.import_module(module), attribute)
        elif (load := _installed_plugins().get(cmd_name)) is not None:
            found = load()
        else:
            return None
        command = found if isinstance(found, click.Command) else found()
        assert isinstance(command, click.Command), f"`aima {cmd_name}` is not a click command"
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aima")
def cli() -> None:
    """AIMA: inference services on Kubernetes GPU nodes, for people and AI agents."""


def main() -> None:
    """Run the CLI."""
    cli()


if __name__ == "__main__":
    main()
