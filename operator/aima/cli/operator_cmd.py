"""`aima operator run`: the controllers."""

from __future__ import annotations

import click

from aima.settings import Settings


@click.group(name="operator")
def operator_group() -> None:
    """The Kubernetes operator."""


@operator_group.command()
def run() -> None:
    """Run the controllers for Models (and, as they land, the other kinds) until stopped.

    Configured from AIMA_* environment variables (see aima.settings.Settings), e.g.
    AIMA_NAMESPACES=team-a,team-b to serve only those namespaces.
    """
    from aima import runner  # the controllers are imported only when the operator runs

    runner.main(Settings.from_env())
