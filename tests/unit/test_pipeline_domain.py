"""Pipeline validation against the units' models, reference resolution, service readiness, bounded
outputs, speech fusion, sentence splitting and audio joining."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import pytest
import yaml

from aima.api.pipeline import Pipeline, PipelineSpec
from aima.domain.pipeline import (
    MAX_TEXT_CHARS,
    binary_fields,
    bounded,
    dependencies,
    speech_fusions,
    step_models,
    step_services,
    validate,
)
from aima.domain.pipeline_refs import UnresolvedError, resolve
from aima.domain.pipeline_status import blocking
from aima.pipelines.speech import SentenceSplitter, join_audio
from aima.units import registry
from aima.units.inference import SpeechOutput
from aima_testenv.engines import wav_bytes

pytestmark = pytest.mark.unit

CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "pipelines"
UNITS = {unit.name: unit for unit in registry()}


def spec(*steps: dict[str, Any], outputs: dict[str, str] | None = None, **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "inputs": [{"name": "audio"}],
            "config": {"llm": "m"},
            "steps": list(steps),
            "outputs": outputs or {},
        }
        | extra
    )


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.yaml")), ids=lambda p: p.stem)
def test_catalog_pipelines_are_valid(path: Path) -> None:
    pipeline = Pipeline.model_validate(yaml.safe_load(path.read_text()))
    assert validate(pipeline.spec, UNITS) == []


def test_problems_name_the_step_and_field() -> None:
    problems = validate(
        spec(
            {
                "id": "ask",
                "unit": "inference.transcribe",
                "inputs": {"model": "w", "audio": "${input.audio}"},
            },
            {
                "id": "chat",
                "unit": "inference.chat",
                "inputs": {"model": 3, "messages": [{"content": "${steps.ask.txt}"}]},
            },
            {"id": "say", "unit": "inference.speak", "inputs": {"text": "${steps.chat.content}"}},
            {"id": "emb", "unit": "inference.embed", "inputs": {"model": "e", "inputt": "x"}},
        ),
        UNITS,
    )
    found = {(p.step, p.field): p.message for p in problems}
    assert (
        "the output of inference.transcribe has no field 'txt'"
        in found[("chat", "inputs.messages.0.content")]
    )
    assert "text" in found[("chat", "inputs.messages.0.content")]  # the fields it does have
    assert found[("chat", "inputs.model")] == "Input should be a valid string"
    assert "unit inference.speak is not registered" in found[("say", "unit")]
    assert found[("emb", "inputs.input")] == "Field required"
    assert found[("emb", "inputs.inputt")] == "Extra inputs are not permitted"
    assert len(problems) == 5, problems


def test_config_references_are_checked_at_the_pipelines_defaults() -> None:
    checked = spec(
        {
            "id": "chat",
            "unit": "inference.chat",
            "inputs": {"model": "${config.llm}", "messages": "${input.audio}", "maxTokens": "${config.mt}"},
        },
        config={"llm": "m", "mt": "lots"},
    )
    problems = validate(checked, UNITS)
    assert [(p.step, p.field) for p in problems] == [("chat", "inputs.maxTokens")]
    assert "integer" in problems[0].message
    fitting = spec(
        {
            "id": "chat",
            "unit": "inference.chat",
            "inputs": {"model": "${config.llm}", "messages": "${input.audio}", "maxTokens": "${config.mt}"},
        },
        config={"llm": "m", "mt": 64},
    )
    assert validate(fitting, UNITS) == []


def test_a_reference_where_a_list_is_expected_is_checked_at_run_time() -> None:
    checked = spec(
        {
            "id": "r",
            "unit": "inference.rerank",
            "inputs": {"model": "r", "query": "q", "documents": "${input.audio}"},
        }
    )
    assert validate(checked, UNITS) == []


def test_dependencies_come_from_references_and_depends_on() -> None:
    deps = dependencies(
        spec(
            {"id": "a", "unit": "x.y"},
            {"id": "b", "unit": "x.y"},
            {
                "id": "c",
                "unit": "x.y",
                "inputs": {"t": "${steps.a.text} ${steps.a.more}"},
                "dependsOn": ["b"],
            },
        )
    )
    assert deps == {"a": frozenset(), "b": frozenset(), "c": frozenset({"a", "b"})}


def test_resolve_keeps_types_for_whole_references_and_renders_inside_text() -> None:
    scope = {"input": {"docs": ["x", "y"]}, "config": {"n": 3}, "steps": {"a": {"items": [{"t": "hi"}]}}}
    value = {"d": "${input.docs}", "n": "${config.n}", "s": "n=${config.n} ${steps.a.items.0.t}", "k": 1}
    assert resolve(value, scope) == {"d": ["x", "y"], "n": 3, "s": "n=3 hi", "k": 1}
    with pytest.raises(UnresolvedError, match=r"steps has no 'b'"):
        resolve("${steps.b.text}", scope)


def test_step_models_resolve_config_only() -> None:
    models = step_models(
        spec(
            {"id": "a", "unit": "x.y", "inputs": {"model": "${config.llm}"}},
            {"id": "b", "unit": "x.y", "inputs": {"model": "${input.audio}"}},
            {"id": "c", "unit": "x.y", "inputs": {"model": "fixed"}},
        ),
        {"llm": "override"},
    )
    assert models == {"a": "override", "c": "fixed"}


def test_step_services_say_which_service_is_missing_or_not_ready() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Ready"}
    waiting = {"type": "Ready", "status": "False", "reason": "ModelNotFound", "message": "Model m not found"}
    services = [
        {"metadata": {"name": "chat"}, "spec": {"servedName": "qwen"}, "status": {"conditions": [ready]}},
        {"metadata": {"name": "tts"}, "spec": {}, "status": {"conditions": [waiting]}},
    ]
    found = step_services({"a": "qwen", "b": "tts", "c": "whisper"}, services)
    assert [(s.step, s.service, s.ready) for s in found] == [
        ("a", "chat", True),
        ("b", "tts", False),
        ("c", None, False),
    ]
    assert found[1].message == "InferenceService tts is not ready (ModelNotFound: Model m not found)"
    assert found[2].message is not None and "no InferenceService serves model whisper" in found[2].message
    assert [s.step for s in blocking(found, require_services=False)] == ["b"]
    assert [s.step for s in blocking(found, require_services=True)] == ["b", "c"]


def test_a_step_may_name_a_service_as_the_gateway_lists_it_outside_its_home_namespace() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Ready"}
    services = [
        {"metadata": {"name": "chat", "namespace": "team"}, "spec": {}, "status": {"conditions": [ready]}}
    ]
    found = step_services({"a": "team/chat", "b": "chat", "c": "other/chat"}, services)
    assert [(s.step, s.service, s.ready) for s in found] == [
        ("a", "chat", True),
        ("b", "chat", True),
        ("c", None, False),
    ]


def test_bounded_outputs_cut_text_and_replace_binary() -> None:
    assert binary_fields(SpeechOutput) == {"audio"}
    output = {"audio": "A" * 10**6, "text": "x" * (MAX_TEXT_CHARS + 10), "vec": list(range(1000)), "n": 1}
    kept = bounded(output, replaced={"audio": {"bytes": 750000}})
    assert kept["audio"] == {"bytes": 750000} and kept["n"] == 1
    assert kept["text"].endswith(f"[cut: {MAX_TEXT_CHARS + 10} characters in all]")
    assert len(kept["vec"]) == 17 and kept["vec"][-1] == "... [cut: 1000 items in all]"
    huge = bounded({f"k{i}": "y" * 2000 for i in range(10)}, replaced={})
    assert list(huge) == ["truncated"]


def test_speech_fusion_pairs_a_chat_with_the_step_speaking_its_answer() -> None:
    voice = spec(
        {"id": "chat", "unit": "inference.chat", "inputs": {}},
        {
            "id": "say",
            "unit": "inference.synthesize",
            "inputs": {"text": "${steps.chat.content}", "voice": "${config.llm}"},
        },
        {"id": "other", "unit": "inference.synthesize", "inputs": {"text": "Answer: ${steps.chat.content}"}},
    )
    assert {chat: step.id for chat, step in speech_fusions(voice).items()} == {"chat": "say"}


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter()
    out = [
        s
        for delta in ["Hello there, friend. ", "Now a second", ' one! And "a third?" ', "tail"]
        for s in splitter.feed(delta)
    ]
    assert out == ["Hello there, friend.", "Now a second one!", 'And "a third?"']
    assert splitter.flush() == "tail"
    long_run = list(SentenceSplitter(max_chars=20).feed("tok " * 10))
    assert long_run == ["tok tok tok tok tok"]


def test_join_audio_makes_one_wav() -> None:
    joined = join_audio([wav_bytes(seconds=0.1), wav_bytes(seconds=0.2)])
    with wave.open(io.BytesIO(joined)) as reader:
        assert reader.getnframes() == 4800
    assert join_audio([b"ID3abc", b"def"]) == b"ID3abcdef"


def test_for_each_steps_read_items_and_expose_items() -> None:
    batch = spec(
        {
            "id": "each",
            "unit": "inference.chat",
            "forEach": "${input.audio}",
            "inputs": {"model": "m", "messages": [{"content": "${item}"}]},
        },
        {
            "id": "next",
            "unit": "inference.chat",
            "inputs": {"model": "m", "messages": [{"content": "${steps.each.items.0.content}"}]},
        },
        {
            "id": "bad",
            "unit": "inference.chat",
            "forEach": "x ${input.audio}",
            "inputs": {"model": "${item}", "messages": []},
        },
        outputs={"all": "${steps.each.items}", "wrong": "${steps.each.content}"},
    )
    found = {(p.step, p.field): p.message for p in validate(batch, UNITS)}
    assert found.keys() == {("bad", "forEach"), ("bad", "inputs.messages"), (None, "outputs.wrong")}, found


def test_inline_audio_and_images_are_kept_apart_and_urls_and_text_stay() -> None:
    from aima.api.pipeline import PipelineSpec
    from aima.units.pipeline import kept_inputs

    spec = PipelineSpec.model_validate(
        {
            "inputs": [
                {"name": "audio", "type": "Audio"},
                {"name": "picture", "type": "Image"},
                {"name": "question"},
                {"name": "clip", "type": "Audio"},
            ],
            "steps": [{"id": "a", "unit": "inference.chat", "inputs": {}}],
        }
    )
    given = {
        "audio": "data:audio/wav;base64,UklGRg==",
        "picture": "iVBORw0K",
        "question": "What is a GPU?",
        "clip": "https://example.com/clip.wav",
    }
    assert kept_inputs(spec, given) == {"audio": "UklGRg==", "picture": "iVBORw0K"}
