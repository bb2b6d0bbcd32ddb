"""Engine templates render in a sandbox: one template is one argument, values stay data, hostile
templates are refused, and a missing variable names the engine and the variable."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aima.api.engine import EngineArgsStyle
from aima.domain.engine_args import EngineTemplateError, render_args, render_env, render_flags

pytestmark = pytest.mark.unit


def context(**model: Any) -> dict[str, Any]:
    return {
        "model": {"name": "qwen", "path": "/models/qwen", "source": "hf://Qwen/Qwen3-8B", "revision": None}
        | model,
        "service": {"name": "chat", "namespace": "team-a", "servedName": "chat", "gpus": 2},
        "engine": {"name": "vllm", "port": 8000, "variant": "cuda", "accelerator": "NvidiaGPU"},
    }


@pytest.mark.parametrize(
    ("templates", "expected"),
    [
        (["--model={{ model.path }}"], ["--model=/models/qwen"]),
        (["--tp={{ service.gpus }}", "--port={{ engine.port }}"], ["--tp=2", "--port=8000"]),
        (["serve", "--flag"], ["serve", "--flag"]),
        (["{% if model.revision is defined %}--revision={{ model.revision }}{% endif %}"], []),
        (["--rev={{ model.revision | default('main') }}"], ["--rev=main"]),
        (["{{ model['name'] | upper }}"], ["QWEN"]),
        (["--gpu-mem={{ 0.9 * service.gpus }}"], ["--gpu-mem=1.8"]),
        (["{{ service.namespace ~ '/' ~ service.name }}"], ["team-a/chat"]),
    ],
    ids=[
        "path",
        "numbers",
        "literals",
        "guarded optional is dropped",
        "default filter",
        "item access",
        "arithmetic on numbers",
        "concatenation",
    ],
)
def test_renders_each_template_to_one_argument(templates: list[str], expected: list[str]) -> None:
    assert render_args(templates, engine="vllm", context=context()) == expected


@pytest.mark.parametrize(
    "hostile_value",
    [
        "/models/x --trust-remote-code",
        "/models/x\n--trust-remote-code",
        "x; rm -rf / #",
        "$(cat /etc/passwd)",
        "{{ ''.__class__.__mro__ }}",
        "{% include '/etc/passwd' %}",
    ],
    ids=[
        "space flag",
        "newline flag",
        "shell",
        "command substitution",
        "template in value",
        "include in value",
    ],
)
def test_a_value_cannot_inject_arguments_or_be_rendered(hostile_value: str) -> None:
    args = render_args(
        ["--model={{ model.path }}", "--port=8000"], engine="vllm", context=context(path=hostile_value)
    )
    assert args == [f"--model={hostile_value}", "--port=8000"]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ model.path.__class__ }}", "unsafe"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "unsafe"),
        ("{{ lipsum.__globals__['os'].popen('id').read() }}", "undefined variable 'lipsum'"),
        ("{{ self._TemplateReference__context }}", "unsafe"),
        ("{{ model.path.split('/') }}", "unsafe"),
        ("{{ '{0.__class__}'.format(model.path) }}", "unsafe"),
        ("{% include '/etc/passwd' %}", "cannot include"),
        ("{% import 'os' as os %}{{ os }}", "cannot include"),
        ("{% extends '/etc/hostname' %}", "cannot include"),
        ("{{ model.path | attr('__class__') }}", "No filter named 'attr'"),
        ("{{ 'x' * 1000000000 }}", "numbers only"),
        ("{{ '%0999999999d' % 1 }}", "numbers only"),
        ("{{ 9 ** 99999999 }}", "exponent"),
        ("{{ model.path | center(1000000000) }}", "No filter named 'center'"),
        ("{{ range(1000000000) | join(',') }}", "undefined variable 'range'"),
        ("{{ model._values }}", "unsafe"),
    ],
)
def test_a_hostile_template_cannot_run_code_read_files_or_exhaust_memory(template: str, problem: str) -> None:
    with pytest.raises(EngineTemplateError, match="Engine 'evil'") as caught:
        render_args([template], engine="evil", context=context())
    assert problem in str(caught.value)


def test_a_very_long_result_is_refused() -> None:
    with pytest.raises(EngineTemplateError, match="more than 4096"):
        render_args(["{{ model.path }}"], engine="vllm", context=context(path="x" * 5000))


def test_a_nul_character_is_refused() -> None:
    with pytest.raises(EngineTemplateError, match="NUL"):
        render_args(["{{ model.path }}"], engine="vllm", context=context(path="a\x00b"))


@pytest.mark.parametrize(
    ("template", "variable"),
    [
        ("--model={{ model.file }}", "model.file"),
        ("{{ modle.path }}", "modle"),
        ("{{ service.replicas + 1 }}", "service.replicas"),
        ("{{ model.revision }}", "model.revision"),
        ("{% if model.quantization == 'fp8' %}--fp8{% endif %}", "model.quantization"),
    ],
    ids=["missing field", "typo in root", "arithmetic", "None counts as missing", "in a condition"],
)
def test_missing_variable_names_the_engine_and_the_variable(template: str, variable: str) -> None:
    with pytest.raises(EngineTemplateError) as caught:
        render_args(["--ok", template], engine="llama-cpp", context=context())
    assert caught.value.engine == "llama-cpp"
    assert caught.value.variable == variable
    assert str(caught.value) == f"Engine 'llama-cpp': template {template!r}: undefined variable {variable!r}"


def test_syntax_error_is_reported_with_the_engine() -> None:
    with pytest.raises(EngineTemplateError, match=re.escape("Engine 'vllm': template '{{ model.path '")):
        render_args(["{{ model.path "], engine="vllm", context=context())


def test_iterating_a_namespace_is_a_template_error_not_a_crash() -> None:
    with pytest.raises(EngineTemplateError, match="TypeError"):
        render_args(["{% for k in model %}{{ k }}{% endfor %}"], engine="vllm", context=context())


def test_env_values_render_and_may_be_empty() -> None:
    env = render_env({"OLLAMA_MODELS": "{{ model.path }}", "EMPTY": ""}, engine="ollama", context=context())
    assert env == {"OLLAMA_MODELS": "/models/qwen", "EMPTY": ""}


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        (EngineArgsStyle.FLAGS, ["--max-model-len=8192", "--enforce-eager", "--x=a b --y"]),
        (EngineArgsStyle.FLAG_AND_VALUE, ["--max-model-len", "8192", "--enforce-eager", "--x", "a b --y"]),
    ],
)
def test_engine_args_are_flags_with_values_as_single_elements(
    style: EngineArgsStyle, expected: list[str]
) -> None:
    flags: dict[str, int | str] = {"max-model-len": 8192, "enforce-eager": "", "x": "a b --y"}
    assert render_flags(flags, style=style, engine="vllm") == expected


def test_engine_args_on_an_engine_without_flags_is_an_error() -> None:
    with pytest.raises(EngineTemplateError, match=r"Engine 'ollama'.*takes no extra flags"):
        render_flags({"num-ctx": 4096}, style=EngineArgsStyle.UNSUPPORTED, engine="ollama")
    assert render_flags({}, style=EngineArgsStyle.UNSUPPORTED, engine="ollama") == []
