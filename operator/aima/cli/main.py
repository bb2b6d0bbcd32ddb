"""Entry point of the `aima` console script.

Subcommands are imported only when called: `aima loader` runs in every loader Job and
`aima device-agent` on every GPU node, and neither should pay for importing the controllers, the MCP
SDK and the unit registry (seconds of start-up and tens of MiB on a small pod).
"""

from __future__ import annotations

import importlib

import click

from aima import __version__

_COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("aima.cli.units_cmd", "api"),
    "dev": ("aima.cli.dev", "dev"),
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


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attribute = _COMMANDS[cmd_name]
        found = getattr(importlib.import_module(module), attribute)
        command = found if isinstance(found, click.Command) else found()
        assert isinstance(command, click.Command), f"{module}.{attribute} is not a click command"
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
