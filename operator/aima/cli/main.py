"""Entry point of the `aima` console script."""

from __future__ import annotations

import click

from aima import __version__
from aima.cli import dev, units_cmd
from aima.cli.operator_cmd import operator_group
from aima.loader.cli import loader


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aima")
def cli() -> None:
    """AIMA: inference services on Kubernetes GPU nodes, for people and AI agents."""


cli.add_command(dev.dev)
cli.add_command(operator_group)
cli.add_command(loader)
units_cmd.register(cli)


def main() -> None:
    """Run the CLI."""
    cli()
