"""References in step inputs may only read declared inputs, config keys and earlier steps."""

from __future__ import annotations

from typing import Any

import pytest

from aima.api.pipeline import PipelineSpec
from aima.domain.pipeline_refs import reference_problems, references

pytestmark = pytest.mark.unit


def spec(*steps: dict[str, Any], outputs: dict[str, str] | None = None) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "inputs": [{"name": "audio"}],
            "config": {"model": "m"},
            "steps": list(steps),
            "outputs": outputs or {},
        }
    )


def test_references_are_found_in_nested_values() -> None:
    value = {"a": "${input.audio}", "b": [{"c": "x ${steps.one.text} y ${config.model}"}], "n": 3}
    assert list(references(value)) == [
        ("input", ("audio",)),
        ("steps", ("one", "text")),
        ("config", ("model",)),
    ]


@pytest.mark.parametrize(
    ("steps", "outputs", "problem"),
    [
        (
            [{"id": "a", "unit": "x.y", "inputs": {"t": "${steps.b.text}"}}, {"id": "b", "unit": "x.y"}],
            {},
            "a: ${steps.b...} must name a step listed before it",
        ),
        (
            [{"id": "a", "unit": "x.y", "inputs": {"t": "${steps.a.text}"}}],
            {},
            "a: ${steps.a...} must name a step listed before it",
        ),
        (
            [{"id": "a", "unit": "x.y", "inputs": {"t": "${input.video}"}}],
            {},
            "${input.video} is not a declared input",
        ),
        ([{"id": "a", "unit": "x.y", "inputs": {"t": "${config.voice}"}}], {}, "${config.voice} is not set"),
        (
            [{"id": "a", "unit": "x.y", "inputs": {"t": "${env.HOME}"}}],
            {},
            "references start with input, config",
        ),
        ([{"id": "a", "unit": "x.y"}], {"out": "${steps.zzz.text}"}, "outputs: ${steps.zzz...}"),
    ],
    ids=[
        "later step",
        "itself",
        "undeclared input",
        "unset config",
        "unknown root",
        "output to unknown step",
    ],
)
def test_reference_problems(steps: list[dict[str, Any]], outputs: dict[str, str], problem: str) -> None:
    problems = [
        f"{p.step or 'outputs'}: {p.message}" for p in reference_problems(spec(*steps, outputs=outputs))
    ]
    assert any(problem in p for p in problems), problems


def test_a_valid_chain_has_no_problems() -> None:
    valid = spec(
        {"id": "a", "unit": "x.y", "inputs": {"audio": "${input.audio}", "model": "${config.model}"}},
        {"id": "b", "unit": "x.y", "inputs": {"text": "${steps.a.text}"}},
        outputs={"text": "${steps.b.text}"},
    )
    assert reference_problems(valid) == []
