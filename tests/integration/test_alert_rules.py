"""AlertRules evaluated by the real operator against the real API server: a GPU rule fires, cools
down and resolves, notifying a local webhook receiver that checks the HMAC signature on its own, as
the channel's documentation tells a user to; alert.* acknowledge and resolve; a service that is not
Ready fires a rule without channels; a channel whose Secret is missing stalls its rule."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from aima.kube import connect
from aima.units import Context, Request, execute, registry
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from fakes.serving import running_in_thread
from waiting import eventually

pytestmark = pytest.mark.integration

KEY = b"hmac-test-key"
REGISTRY = registry()


@dataclass
class Received:
    """One notification, with whether its signature checked out."""

    at: float
    signed: bool
    payload: dict[str, Any]
    timestamp: str
    signature: str


def signed_by_key(*, timestamp: str, body: bytes, signature: str) -> bool:
    """The check the AlertRule channel documents, written from that text alone (not with the
    operator's own signing code): `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`, where
    the timestamp is Unix seconds no more than five minutes old."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = hmac.new(KEY, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)


@dataclass
class Receiver:
    """A webhook endpoint that verifies X-AIMA-Signature with KEY, as a user's receiver would."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-AIMA-Timestamp", "")
        signature = request.headers.get("X-AIMA-Signature", "")
        signed = signed_by_key(timestamp=timestamp, body=body, signature=signature)
        received = Received(
            at=time.monotonic(),
            signed=signed,
            payload=json.loads(body),
            timestamp=timestamp,
            signature=signature,
        )
        with self.lock:
            self.received.append(received)
        return web.Response(status=204 if signed else 401)

    def states(self) -> list[str]:
        with self.lock:
            return [r.payload["state"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with running_in_thread(hooks.app()) as url:
        yield hooks, f"{url}/hook"


def apply(plane: ControlPlane, obj: dict[str, Any]) -> None:
    plane.kubectl("apply", "--server-side", "--field-manager=tests", "-f", "-", stdin=json.dumps(obj))


def meta(name: str, namespace: str | None = None) -> dict[str, str]:
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


def aima(kind: str, metadata: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "aima.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def rule_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    body = json.loads(plane.kubectl("get", "alertrule", name, "-n", namespace, "-o", "json").stdout)
    status: dict[str, Any] = body.get("status", {})
    return status


def set_temperature(plane: ControlPlane, node: str, celsius: int) -> None:
    gpu = {"index": 0, "uuid": "GPU-t", "name": "NVIDIA H100", "temperatureCelsius": celsius}
    status = {"status": {"nvml": True, "gpuCount": 1, "gpus": [gpu]}}
    plane.kubectl(
        "patch", "nodedevices", node, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def call(plane: ControlPlane, namespace: str, unit: str, **input_: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        kube = await connect(kubeconfig=plane.kubeconfig)
        try:
            context = Context(kube=kube, namespace=namespace)
            return (await execute(REGISTRY, context, Request(unit=unit, input=input_))).dump()
        finally:
            await kube.close()

    return asyncio.run(go())


def test_gpu_rule_fires_cools_down_and_resolves(
    operator: OperatorThread, aima_crds: ControlPlane, namespace: str, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    node = f"alert-{namespace[-6:]}"
    secret = {"url": base64.b64encode(url.encode()).decode(), "key": base64.b64encode(KEY).decode()}
    apply(
        aima_crds,
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("hooks", namespace), "data": secret},
    )
    apply(aima_crds, aima("NodeDevices", meta(node), {"nodeName": node}))
    try:
        set_temperature(aima_crds, node, 91)
        rule = {
            "condition": {"gpu": {"metric": "TemperatureCelsius", "above": 85, "node": node}},
            "for": "1s",
            "cooldown": "8s",
            "severity": "Critical",
            "channels": [
                {
                    "name": "ops",
                    "urlSecretRef": {"name": "hooks", "key": "url"},
                    "signingSecretRef": {"name": "hooks", "key": "key"},
                }
            ],
        }
        apply(aima_crds, aima("AlertRule", meta("gpu-hot", namespace), rule))

        eventually(lambda: hooks.states() == ["Firing"], what="the firing notification")
        first = hooks.received[0]
        assert first.signed
        assert re.fullmatch(r"[0-9]{10}", first.timestamp), first.timestamp
        assert re.fullmatch(r"sha256=[0-9a-f]{64}", first.signature), first.signature
        assert (first.payload["subject"], first.payload["severity"]) == (f"{node}/GPU-t", "Critical")
        assert first.payload["message"] == f"GPU 0 on {node} (NVIDIA H100): TemperatureCelsius 91 above 85"
        status = rule_status(aima_crds, namespace, "gpu-hot")
        assert (status["state"], status["firing"]) == ("Firing", 1)
        assert "key" not in json.dumps(status) and url not in json.dumps(status)  # no secrets in status
        events = aima_crds.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "AlertFiring" in events

        set_temperature(aima_crds, node, 50)
        eventually(lambda: hooks.states() == ["Firing", "Resolved"], what="the resolved notification")
        assert rule_status(aima_crds, namespace, "gpu-hot")["state"] == "Inactive"

        # It fires again within the cooldown: recorded at once, notified when the cooldown ends.
        set_temperature(aima_crds, node, 95)
        eventually(
            lambda: rule_status(aima_crds, namespace, "gpu-hot").get("state") == "Firing", what="firing again"
        )
        assert hooks.states() == ["Firing", "Resolved"]
        eventually(lambda: len(hooks.received) == 3, what="the delayed notification", timeout=30)
        assert hooks.received[2].at - first.at >= 7.5  # the cooldown is 8 s from the first notification
        assert all(r.signed for r in hooks.received)

        acknowledged = call(aima_crds, namespace, "alert.acknowledge", name="gpu-hot", by="tester")
        assert acknowledged["data"]["recorded"] and acknowledged["data"]["state"] == "Acknowledged"
        resolved = call(aima_crds, namespace, "alert.resolve", name="gpu-hot")
        assert resolved["data"]["recorded"] and resolved["data"]["state"] == "Inactive"
        eventually(lambda: len(hooks.received) == 4, what="the resolved-by-hand notification")
        assert hooks.received[3].payload["message"] == "resolved by hand"
        history = [
            (h["state"], h["message"]) for h in rule_status(aima_crds, namespace, "gpu-hot")["history"]
        ]
        assert history[-2:] == [("Acknowledged", "acknowledged by tester"), ("Resolved", "resolved by hand")]
        listed = call(aima_crds, namespace, "alert.list")["data"]["items"]
        assert [(i["name"], i["state"], i["ready"]) for i in listed] == [("gpu-hot", "Inactive", True)]
        final = rule_status(aima_crds, namespace, "gpu-hot")
        assert {c["type"] for c in final["conditions"]} == {"Ready"}  # neither Stalled nor Reconciling
    finally:
        aima_crds.kubectl("delete", "nodedevices", node, "--ignore-not-found")


def test_a_service_not_ready_fires_a_rule_without_channels(
    operator: OperatorThread, aima_crds: ControlPlane, namespace: str
) -> None:
    apply(aima_crds, aima("InferenceService", meta("chat", namespace), {"modelRef": {"name": "missing"}}))
    rule = {"condition": {"serviceNotReady": {"name": "chat"}}, "for": "2s"}
    apply(aima_crds, aima("AlertRule", meta("chat-down", namespace), rule))
    status = eventually(
        lambda: (s := rule_status(aima_crds, namespace, "chat-down")).get("state") == "Firing" and s,
        what="the rule to fire",
    )
    (alert,) = status["alerts"]
    assert alert["subject"] == "InferenceService/chat"
    assert alert["message"].startswith("ModelNotFound")
    assert status["history"][0]["state"] == "Firing"
    reasons = json.loads(aima_crds.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "AlertFiring" and e["involvedObject"]["name"] == "chat-down" for e in reasons)


def test_a_channel_whose_secret_is_missing_stalls_its_rule_until_it_exists(
    operator: OperatorThread, aima_crds: ControlPlane, namespace: str
) -> None:
    channel = {"name": "ops", "urlSecretRef": {"name": "hooks", "key": "url"}}
    rule = {"condition": {"modelFailed": {}}, "channels": [channel]}
    apply(aima_crds, aima("AlertRule", meta("quiet", namespace), rule))

    def conditions() -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in rule_status(aima_crds, namespace, "quiet").get("conditions", [])}

    # Nothing fires, yet the missing Secret shows at once, not when an alert cannot be delivered.
    found = eventually(lambda: (c := conditions()).get("Stalled") and c, what="the rule to stall")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "ChannelSecretMissing")
    assert found["Stalled"]["message"] == "channel ops: Secret hooks not found"
    assert "Reconciling" not in found
    url = base64.b64encode(b"http://127.0.0.1:9/hook").decode()
    apply(
        aima_crds,
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("hooks", namespace), "data": {"url": url}},
    )
    aima_crds.kubectl(
        "annotate", "alertrule", "quiet", "-n", namespace, "touched=1"
    )  # Secrets are not watched
    eventually(lambda: set(conditions()) == {"Ready"}, what="the rule to recover")
    assert conditions()["Ready"]["status"] == "True"
