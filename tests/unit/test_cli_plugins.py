"""`aima dev` is a plugin of the CLI: the test control plane (testenv/) provides it through the
entry-point group `aima.cli`; an install without that project, such as the image, names the
development install instead."""

from __future__ import annotations

import importlib.metadata

import click
import pytest
from click.testing import CliRunner

from aima.cli.main import PLUGINS, cli, plugin_commands
from aima_testenv.dev import dev

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("args", [[], ["up", "--kwok-only"], ["node"], ["--help"]])
def test_without_the_plugin_aima_dev_names_the_development_install(args: list[str]) -> None:
    command = plugin_commands([])["dev"]()
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1
    assert "`aima dev` needs the development install" in result.output
    assert "make dev" in result.output and "hack/setup" in result.output


def test_the_development_install_adds_aima_dev_through_the_entry_point() -> None:
    (entry,) = importlib.metadata.entry_points(group=PLUGINS, name="dev")
    assert entry.value == "aima_testenv.dev:dev"
    assert plugin_commands([entry])["dev"]() is dev
    result = CliRunner().invoke(cli, ["dev", "--help"])
    assert result.exit_code == 0, result.output
    assert "up " in result.output and "node " in result.output


def test_a_plugin_never_replaces_a_built_in_command() -> None:
    entry = importlib.metadata.EntryPoint(name="loader", value="aima_testenv.dev:dev", group=PLUGINS)
    assert "loader" not in plugin_commands([entry])
