"""The routing table from InferenceServices and EndpointSlices, reading `model` from bodies, error JSON."""

from __future__ import annotations

import json

import pytest

from aima.gateway import bodies
from aima.gateway.errors import GatewayError
from aima.gateway.metrics import GatewayMetrics, usage_tokens
from aima.gateway.routes import build_table, distinct, service_view, slice_view
from aima.settings import Settings

pytestmark = pytest.mark.unit


def isvc(name: str, namespace: str = "ns", **spec: object) -> dict[str, object]:
    meta = {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"}
    return {"metadata": meta, "spec": {"modelRef": {"name": "m"}} | spec}


def endpoint_slice(
    service: str, *addresses: str, ready: bool | None = True, port: int = 8000, namespace: str = "ns"
) -> dict[str, object]:
    conditions = {} if ready is None else {"ready": ready}
    labels = {"kubernetes.io/service-name": service}
    return {
        "metadata": {"name": f"{service}-x", "namespace": namespace, "labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": conditions} for a in addresses],
    }


def test_a_service_view_knows_replicas_suspension_and_scale_from_zero() -> None:
    view = service_view(
        isvc("chat", replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2}, servedName="qwen")
    )
    assert (view.replicas, view.suspended, view.scale_from_zero, view.served_name) == (0, False, True, "qwen")
    assert view.created == 1767225600
    assert not service_view(isvc("fixed", replicas=0)).scale_from_zero


def test_requests_name_the_engines_fixed_model_when_its_status_gives_one() -> None:
    fixed = isvc("voice", servedName="speech") | {"status": {"engineModel": "kokoro"}}
    assert service_view(fixed).engine_model == "kokoro"
    assert service_view(isvc("voice", servedName="speech")).engine_model == "speech"
    assert service_view(isvc("voice")).engine_model == "voice"


def test_slices_give_ready_endpoints_only() -> None:
    assert slice_view(endpoint_slice("chat", "10.0.0.1", "10.0.0.2")).endpoints == (  # type: ignore[union-attr]
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
    )
    assert slice_view(endpoint_slice("chat", "10.0.0.1", ready=False)).endpoints == ()  # type: ignore[union-attr]
    assert slice_view(endpoint_slice("chat", "10.0.0.1", ready=None)).endpoints == ("http://10.0.0.1:8000",)  # type: ignore[union-attr]
    assert slice_view({"metadata": {"name": "orphan"}}) is None


def test_the_table_routes_names_and_aliases_to_their_replicas() -> None:
    services = [service_view(isvc("chat", servedName="qwen")), service_view(isvc("embed"))]
    slices = [slice_view(endpoint_slice("chat", "10.0.0.1")), slice_view(endpoint_slice("other", "10.0.0.9"))]
    table = build_table(services, [s for s in slices if s is not None], home="ns")
    assert table["chat"] is table["qwen"]
    assert table["chat"].endpoints == ("http://10.0.0.1:8000",)
    assert table["embed"].endpoints == ()
    assert table["chat"].model == "qwen"


def test_a_name_wins_over_another_services_alias() -> None:
    table = build_table([service_view(isvc("a", servedName="b")), service_view(isvc("b"))], [], home="ns")
    assert table["b"].service.name == "b"


def test_other_namespaces_are_qualified_and_their_slices_stay_theirs() -> None:
    services = [
        service_view(isvc("chat")),
        service_view(isvc("chat", namespace="team")),
        service_view(isvc("embed", namespace="team", servedName="bge")),
    ]
    slices = [
        slice_view(endpoint_slice("chat", "10.0.0.1")),
        slice_view(endpoint_slice("chat", "10.0.1.1", namespace="team")),
    ]
    table = build_table(services, [s for s in slices if s is not None], home="ns")
    assert table["chat"].endpoints == ("http://10.0.0.1:8000",)
    assert table["team/chat"].endpoints == ("http://10.0.1.1:8000",)
    assert table["team/embed"] is table["team/bge"]
    assert table["team/embed"].model == "team/bge"
    assert {"embed", "bge"}.isdisjoint(table)
    assert len(distinct(table)) == 3


def test_the_model_is_read_from_json() -> None:
    model, payload = bodies.json_model(b'{"model": "chat", "messages": []}')
    assert (model, payload["messages"]) == ("chat", [])
    for bad in (b"{", b"[1]", b'{"model": ""}', b"{}"):
        with pytest.raises(GatewayError) as raised:
            bodies.json_model(bad)
        assert raised.value.status == 400


def test_the_model_is_read_from_multipart_without_touching_the_file() -> None:
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        'name="model" inside the audio\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--{boundary}--\r\n'
    ).encode()
    assert bodies.multipart_field(body, f"multipart/form-data; boundary={boundary}", "model") == "whisper"
    with pytest.raises(GatewayError):
        bodies.multipart_field(body, "multipart/form-data; boundary=other", "model")


def test_a_multipart_model_is_renamed_and_the_file_left_as_it_came() -> None:
    boundary = "XyZ"
    audio = 'RIFF name="model" team/whisper'
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n{audio}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nteam/whisper\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    renamed = bodies.with_multipart_field(body, content_type, "model", "aima/model")
    assert bodies.multipart_field(renamed, content_type, "model") == "aima/model"
    field = b'name="model"\r\n\r\n'
    assert renamed == body.replace(field + b"team/whisper", field + b"aima/model")
    assert audio.encode() in renamed  # the file's bytes, its look-alike of the field included
    assert bodies.with_multipart_field(body, content_type, "language", "fr") == body  # no such field


def test_the_affinity_key_is_the_system_prompt_and_first_user_message() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "More"},
        ]
    }
    assert bodies.affinity_key(payload, chars=100) == b"Be brief.\nHello"
    assert bodies.affinity_key(payload, chars=4) == b"Be b"
    assert bodies.affinity_key({"prompt": "x"}, chars=10) is None


def test_errors_are_openai_shaped_with_retry_after() -> None:
    response = GatewayError(
        503, "starting", code="model_not_ready", param="model", retry_after=2.2
    ).response()
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert json.loads(response.body)["error"] == {  # type: ignore[arg-type]
        "message": "starting",
        "type": "server_error",
        "param": "model",
        "code": "model_not_ready",
    }


def test_usage_is_found_in_replies_and_stream_chunks() -> None:
    assert usage_tokens(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 5}}') == (3, 5)
    assert usage_tokens(b'data: {"choices": []}\n\n') is None


def test_metrics_render_counters_and_histograms() -> None:
    metrics = GatewayMetrics()
    metrics.finish(model="chat", route="/v1/completions", code=200, seconds=0.003)
    metrics.count_usage("chat", (3, 5))
    text = metrics.render()
    assert 'aima_gateway_requests_total{model="chat",route="/v1/completions",code="200"} 1' in text
    assert 'aima_gateway_tokens_total{model="chat",kind="completion"} 5' in text
    assert (
        'aima_gateway_request_duration_seconds_bucket{model="chat",route="/v1/completions",le="0.005"} 1'
        in text
    )


def test_routed_namespaces_come_from_a_comma_separated_variable() -> None:
    settings = Settings.from_env({"AIMA_GATEWAY_ROUTE_NAMESPACES": "team-b,team-c"})
    assert settings.gateway_routed_namespaces == ("team-b", "team-c")
    assert Settings.from_env({"AIMA_GATEWAY_ROUTE_NAMESPACES": "team-b,*"}).gateway_routed_namespaces == (
        None,
    )
    assert Settings.from_env({}).gateway_routed_namespaces == ()


def test_an_adapter_is_routed_only_to_the_replicas_that_hold_it() -> None:
    status = {"adapters": [{"name": "sql", "model": "chat:sql", "state": "Loading", "pods": ["chat-a"]}]}
    view = service_view(isvc("chat") | {"status": status})
    pods = endpoint_slice("chat", "10.0.0.1", "10.0.0.2")
    for item, pod in zip(pods["endpoints"], ("chat-a", "chat-b"), strict=True):  # type: ignore[call-overload]
        item["targetRef"] = {"kind": "Pod", "name": pod}
    table = build_table([view], [slice_view(pods)], home="ns")  # type: ignore[list-item]
    adapter = table["chat:sql"]
    assert (adapter.endpoints, adapter.adapter, adapter.upstream_model) == (
        ("http://10.0.0.1:8000",),
        "sql",
        "sql",
    )
    assert table["chat"].endpoints == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert table["chat"].upstream_model == "chat"


def test_a_service_name_wins_over_an_adapter_id_that_looks_the_same() -> None:
    status = {"adapters": [{"name": "8b", "model": "llama:8b", "state": "Ready", "pods": []}]}
    adapter_owner = service_view(isvc("llama") | {"status": status})
    aliased = service_view(isvc("other", servedName="llama:8b"))
    table = build_table([adapter_owner, aliased], [], home="ns")
    assert table["llama:8b"].service.name == "other" and table["llama:8b"].adapter is None
