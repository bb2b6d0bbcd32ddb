"""The image the chart runs, checked without Docker (none runs here): the Dockerfile's stages, user
and entry point, that everything it copies exists and passes .dockerignore, and that every command
line the chart gives a container is one the `aima` CLI accepts."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from aima.cli.main import cli
from aima_testenv import ensure_binaries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aima"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def included(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching pattern wins)."""
    verdict = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            verdict = keep
    return verdict


def test_the_image_builds_in_two_stages_and_runs_aima_as_non_root() -> None:
    build, runtime = stages()
    assert build[0][1].endswith("AS build")
    assert runtime[0][1].endswith("AS runtime")
    assert not any(name == "RUN" and "gcc" in args for name, args in runtime), "no compilers at run time"
    final = {name: args for name, args in runtime}  # the last of each instruction counts
    assert final["USER"] == "65532:65532"
    assert json.loads(final["ENTRYPOINT"]) == ["aima"]
    assert [name for name, _ in runtime].index("USER") > max(
        i for i, (n, _) in enumerate(runtime) if n == "RUN"
    )
    assert "COPY catalog /opt/aima/catalog" in {f"COPY {args}" for name, args in runtime if name == "COPY"}


def test_everything_the_dockerfile_copies_exists_and_reaches_the_build_context() -> None:
    sources = [
        source
        for name, args in instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert included(source), f"{source} is excluded by .dockerignore"
    assert not included(".venv")
    assert not included("tests")


def rendered_containers() -> list[dict[str, Any]]:
    helm = ensure_binaries().path("helm")
    values = CHART / "ci" / "everything-values.yaml"
    argv = [str(helm), "template", "aima", str(CHART), "-n", "aima-system", "-f", str(values)]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    workloads = [o for o in yaml.safe_load_all(output) if o and o["kind"] in ("Deployment", "DaemonSet")]
    return [c for w in workloads for c in w["spec"]["template"]["spec"]["containers"]]


def test_every_command_line_the_chart_runs_is_one_the_cli_accepts() -> None:
    containers = rendered_containers()
    assert {c["name"] for c in containers} == {"operator", "gateway", "mcp", "device-agent"}
    for container in containers:
        args = [str(a) for a in container["args"]]
        with click.Context(cli) as context:
            # Parsing without invoking: unknown commands or options raise UsageError.
            command: click.Command = cli
            remaining = args
            while isinstance(command, click.Group):
                name, command, remaining = command.resolve_command(context, remaining)
                assert command is not None, f"{container['name']}: no command {name}"
            command.make_context(command.name, list(remaining), parent=context)
