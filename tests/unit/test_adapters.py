"""LoRA adapters (pure): what each adapter of a service needs, the calls each replica gets, the
status and condition they make, and the engine flags a service with adapters runs with."""

from __future__ import annotations

from typing import Any

import pytest
from test_inference_service_plan import ENGINES, NOW, container_of, model, observed, planned, service

from aima.api.engine import Engine
from aima.api.inference_service import AdapterState, InferenceService
from aima.domain import adapters as planning
from aima.domain import inference_service as service_planning

pytestmark = pytest.mark.unit

VLLM = Engine.model_validate(next(e for e in ENGINES if e["metadata"]["name"] == "vllm"))
LLAMA_CPP = Engine.model_validate(next(e for e in ENGINES if e["metadata"]["name"] == "llama-cpp"))


def lora(name: str, *, base: str = "tiny", ready: bool = True, type_: str = "LoRA") -> dict[str, Any]:
    found = model(ready=ready)
    found["metadata"]["name"] = name
    found["spec"] = {"source": f"hf://acme/{name}", "type": type_} | (
        {"baseModelRef": {"name": base}} if type_ == "LoRA" else {}
    )
    if ready:
        found["status"]["path"] = f"adapters/{name}"
    return found


def chat(*names: str) -> InferenceService:
    adapters = [{"name": n, "modelRef": {"name": f"{n}-lora"}} for n in names]
    return InferenceService.model_validate(service(adapters=adapters))


def replica(pod: str, *loaded: str, reachable: bool = True) -> planning.Replica:
    return planning.Replica(
        pod=pod,
        url=f"http://{pod}:8000",
        loaded=frozenset(loaded) if reachable else None,
        error=None if reachable else "connection refused",
    )


def test_a_loadable_adapter_has_its_path_in_the_base_models_volume() -> None:
    (wanted,) = planning.wanted(chat("sql"), models={"sql-lora": lora("sql-lora")}, engine=VLLM)
    assert wanted == planning.Wanted(name="sql", path="/models/adapters/sql-lora")


@pytest.mark.parametrize(
    ("models", "engine", "words"),
    [
        ({}, VLLM, ["sql-lora does not exist", "create a Model of type LoRA with baseModelRef tiny"]),
        ({"sql-lora": lora("sql-lora", type_="LLM")}, VLLM, ["of type LLM, not LoRA"]),
        (
            {"sql-lora": lora("sql-lora", base="qwen")},
            VLLM,
            ["is for Model qwen", "this service serves Model tiny"],
        ),
        (
            {"sql-lora": lora("sql-lora")},
            LLAMA_CPP,
            ["llama-cpp cannot load LoRA adapters", "spec.engineRef"],
        ),
    ],
    ids=["missing", "not-lora", "other-base", "engine-cannot"],
)
def test_an_adapter_that_cannot_load_says_why_and_what_to_do(
    models: dict[str, Any], engine: Engine, words: list[str]
) -> None:
    (wanted,) = planning.wanted(chat("sql"), models=models, engine=engine)
    assert wanted.path is None and wanted.problem is not None
    assert all(w in wanted.problem for w in words), wanted.problem
    (status,) = planning.report([wanted], replicas=[replica("p0")], failures={}, model_id="chat")
    assert status.state is AdapterState.FAILED and status.message == wanted.problem


def test_an_adapter_id_another_service_serves_under_is_refused_with_both_names() -> None:
    taken = {"chat:sql": "sql-chat", "chat:other": "x"}
    sql, fine = planning.wanted(
        chat("sql", "fine"), models={"sql-lora": lora("sql-lora")}, engine=VLLM, taken=taken
    )
    assert sql.problem is not None and sql.problem.startswith(
        "chat:sql is the servedName of InferenceService sql-chat"
    )
    assert fine.problem is not None and "fine-lora does not exist" in fine.problem  # judged on its own


def test_an_adapter_still_downloading_is_pending() -> None:
    (wanted,) = planning.wanted(chat("sql"), models={"sql-lora": lora("sql-lora", ready=False)}, engine=VLLM)
    assert wanted.path is None and "Waiting for Model sql-lora" in str(wanted.pending)
    (status,) = planning.report([wanted], replicas=[], failures={}, model_id="chat")
    assert status.state is AdapterState.PENDING


def test_each_replica_loads_what_it_lacks_and_unloads_what_the_spec_dropped() -> None:
    wanted = [
        planning.Wanted(name="sql", path="/models/adapters/sql"),
        planning.Wanted(name="gone", problem="x"),
    ]
    replicas = [replica("p0", "sql", "old"), replica("p1"), replica("p2", reachable=False)]
    found = {(a.replica.pod, a.verb, a.adapter) for a in planning.actions(wanted, replicas)}
    # p2 could not be asked, so it is left alone until it answers
    assert found == {("p0", "unload", "old"), ("p1", "load", "sql")}
    assert planning.actions(wanted, [replica("p0", "sql")]) == []  # a steady state makes no calls


def test_the_status_counts_the_replicas_that_hold_an_adapter_and_names_them() -> None:
    wanted = [planning.Wanted(name="sql", path="/p")]
    (status,) = planning.report(
        wanted, replicas=[replica("p0", "sql"), replica("p1", "sql")], failures={}, model_id="chat"
    )
    assert (status.state, status.ready_replicas, status.pods, status.model) == (
        AdapterState.READY,
        2,
        ["p0", "p1"],
        "chat:sql",
    )
    (partly,) = planning.report(
        wanted, replicas=[replica("p0", "sql"), replica("p1", reachable=False)], failures={}, model_id="chat"
    )
    assert (
        partly.state is AdapterState.LOADING and "pod p1 did not answer: connection refused" in partly.message
    )


def test_an_engine_refusal_is_shown_in_the_engines_own_words() -> None:
    wanted = [planning.Wanted(name="sql", path="/p")]
    refusal = "500: LoRA rank 128 is greater than max_lora_rank 64."
    (status,) = planning.report(
        wanted, replicas=[replica("p0")], failures={("p0", "sql"): refusal}, model_id="chat"
    )
    assert status.state is AdapterState.FAILED and refusal in status.message
    finding = planning.finding([status])
    assert finding is not None and (finding.status, finding.reason) == ("False", "AdapterFailed")
    assert refusal in finding.message


def test_adapters_ready_is_present_only_while_the_spec_lists_adapters() -> None:
    body = service(adapters=[{"name": "sql", "modelRef": {"name": "sql-lora"}}])
    plan = planned(body, observed=observed(engines=ENGINES))
    ready = planning.report(
        [planning.Wanted(name="sql", path="/p")],
        replicas=[replica("p0", "sql")],
        failures={},
        model_id="chat",
    )
    status = service_planning.compute_status(body, plan=plan, observed=observed(), now=NOW, adapters=ready)
    assert any(c.type == "AdaptersReady" and c.status == "True" for c in status.conditions)
    body["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["adapters"] = []
    after = service_planning.compute_status(body, plan=plan, observed=observed(), now=NOW)
    assert all(c.type != "AdaptersReady" for c in after.conditions) and after.adapters is None


def test_adapter_support_is_turned_on_only_while_the_service_lists_adapters() -> None:
    cpu = {"engineRef": {"name": "vllm"}, "resources": {"gpus": 0}}
    plain = container_of(planned(service(**cpu), observed=observed()))
    assert "--enable-lora" not in plain["args"]
    listed = service(adapters=[{"name": "sql", "modelRef": {"name": "sql-lora"}}], **cpu)
    container = container_of(planned(listed, observed=observed()))
    assert {"--enable-lora", "--max-lora-rank=64"} <= set(container["args"])
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]
