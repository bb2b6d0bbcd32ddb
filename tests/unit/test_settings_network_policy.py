"""The engine NetworkPolicy settings as the chart passes them: AIMA_* variables, JSON where a field
is a selector or a list of peers, checked when the operator starts."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from aima.api.network import LabelSelectorOperator
from aima.settings import Settings

pytestmark = pytest.mark.unit

MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_policies_are_on_by_default_for_the_gateway_and_operator_pods() -> None:
    settings = Settings.from_env({})
    assert settings.engine_network_policy is True
    assert settings.engine_ingress_from == ()
    [component] = settings.platform_pod_selector.match_expressions
    assert (component.key, component.operator) == ("app.kubernetes.io/component", LabelSelectorOperator.IN)
    assert component.values == ["gateway", "operator"]


def test_the_chart_variables_are_read() -> None:
    selector = {"matchLabels": {"app.kubernetes.io/instance": "prod"}}
    settings = Settings.from_env(
        {
            "AIMA_ENGINE_NETWORK_POLICY": "false",
            "AIMA_PLATFORM_NAMESPACE": "platform",
            "AIMA_PLATFORM_POD_SELECTOR": json.dumps(selector),
            "AIMA_ENGINE_INGRESS_FROM": json.dumps([MONITORING]),
        }
    )
    assert settings.engine_network_policy is False
    assert settings.platform_namespace == "platform"
    assert settings.platform_pod_selector.match_labels == {"app.kubernetes.io/instance": "prod"}
    assert settings.platform_pod_selector.match_expressions == []
    [peer] = settings.engine_ingress_from
    assert peer.namespace_selector is not None
    assert peer.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "monitoring"}


def test_a_variable_that_is_not_json_is_named() -> None:
    with pytest.raises(ValueError, match="AIMA_ENGINE_INGRESS_FROM is not JSON"):
        Settings.from_env({"AIMA_ENGINE_INGRESS_FROM": "monitoring"})


@pytest.mark.parametrize(
    ("peer", "named"),
    [
        ({"podSelectr": {}}, "podSelectr"),
        ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "or else ipBlock"),
        ({}, "or else ipBlock"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "In needs values"),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]}},
            "no values",
        ),
    ],
    ids=[
        "misspelt field",
        "ip block with a selector",
        "empty peer",
        "In without values",
        "Exists with values",
    ],
)
def test_a_peer_the_api_server_would_refuse_stops_the_operator_at_start(peer: object, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings.from_env({"AIMA_ENGINE_INGRESS_FROM": json.dumps([peer])})


def test_settings_written_as_variables_read_back_the_same() -> None:
    """A process started with `to_env` (the tests' operator process) gets these very settings."""
    settings = Settings(
        namespaces=("a", "b"),
        retry_seconds=0.5,
        engine_network_policy=False,
        engine_ingress_from=(MONITORING,),  # type: ignore[arg-type]
        gateway_api_key="sk-test",  # type: ignore[arg-type]
    )
    again = Settings.from_env(settings.to_env())
    assert again.model_dump() == settings.model_dump()
    assert again.gateway_api_key is not None and again.gateway_api_key.get_secret_value() == "sk-test"
