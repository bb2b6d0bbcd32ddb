"""The OpenAI gateway against the local control plane, with small real engine servers as replicas.

Everything the gateway knows comes from the real API server: InferenceServices the operator
reconciles, pods kwok runs to Ready, EndpointSlices the kube-controller-manager builds, API keys
in Secrets. One hop cannot be real here: kwok's pod IPs are not on this machine, so
:class:`aima_testenv.gateway.LocalReplicas` plays the network, answering every ready endpoint the
gateway's watch sees with a fake engine on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aima.gateway import Proxy, open_gateway
from aima.gateway.server import gateway_server_app
from aima.gateway.watching import ClusterRoutes
from aima.kube import KubeClient, connect
from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.engines import EngineOptions, wav_bytes
from aima_testenv.gateway import LocalReplicas
from aima_testenv.operator import OperatorThread
from aima_testenv.processes import free_port
from declared import get, make_model
from waiting import eventually

pytestmark = pytest.mark.integration

KEY = "sk-test-all"
KEY_CHAT_ONLY = "sk-test-chat-only"
KEY_LIMITED = "sk-test-two-per-minute"
KEY_UNITS_READ = "sk-test-units-read"
KEY_UNITS_WRITE = "sk-test-units-write"
AUTH = {"Authorization": f"Bearer {KEY}"}
UNITS_READ = {"Authorization": f"Bearer {KEY_UNITS_READ}"}
UNITS_WRITE = {"Authorization": f"Bearer {KEY_UNITS_WRITE}"}


# -- the cluster side ----------------------------------------------------------------------------


def replicas(plane: ControlPlane, namespace: str, name: str) -> int | None:
    return (get(plane, "isvc", name, namespace) or {}).get("spec", {}).get("replicas")


def inference_service(
    plane: ControlPlane, namespace: str, name: str, *, model: str = "tiny", **spec: Any
) -> None:
    body = {"modelRef": {"name": model}} | spec
    plane.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": name, "namespace": namespace},
                "spec": body,
            }
        ]
    )


def key_secret(name: str, token: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in ({"key": token} | data).items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"aima.dev/api-key": "true"}},
        "data": encoded,
    }


def ready_endpoints(plane: ControlPlane, namespace: str, service: str) -> int:
    slices = json.loads(
        plane.kubectl(
            "get",
            "endpointslices",
            "-n",
            namespace,
            "-l",
            f"kubernetes.io/service-name={service}",
            "-o",
            "json",
        ).stdout
    )
    return sum(
        1
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready", True)
    )


@pytest.fixture(scope="module")
def cluster(aima_crds: ControlPlane, operator: OperatorThread) -> Iterator[tuple[ControlPlane, str]]:
    """A namespace with a ready Model, a two-replica `chat` service, a Model still downloading with
        a `loading` service, a `sleepy` service at zero that may scale from zero, and API keys: for every
    model, for chat only, rate-limited, and two with access to the units door (read, write)."""
    plane, namespace = aima_crds, f"gateway-{int(time.time() * 1000) % 10**8}"
    plane.kubectl("create", "namespace", namespace)
    make_model(plane, namespace, ready=True)
    make_model(plane, namespace, name="big", ready=False)
    inference_service(plane, namespace, "chat", replicas=2)
    inference_service(plane, namespace, "loading", model="big")
    inference_service(
        plane, namespace, "sleepy", replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 1}
    )
    secrets = [
        key_secret("all", KEY),
        key_secret("chat-only", KEY_CHAT_ONLY, models="chat"),
        key_secret("limited", KEY_LIMITED, requestsPerMinute="2"),
        key_secret("dashboard", KEY_UNITS_READ, units="read"),
        key_secret("console", KEY_UNITS_WRITE, units="write"),
    ]
    plane.apply([s | {"metadata": s["metadata"] | {"namespace": namespace}} for s in secrets])
    try:
        eventually(
            lambda: ready_endpoints(plane, namespace, "chat") == 2, what="two chat endpoints", timeout=120
        )
    except pytest.fail.Exception:
        state = plane.kubectl("get", "isvc,deploy,pods,endpointslices", "-n", namespace, "-o", "wide").stdout
        conditions = (get(plane, "isvc", "chat", namespace) or {}).get("status", {}).get("conditions")
        pytest.fail(f"no two ready chat endpoints:\n{state}\n{conditions}")
    yield plane, namespace
    plane.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so that a connection left open fails the test that left it."""
    yield
    gc.collect()


# -- the network side ----------------------------------------------------------------------------


@dataclass
class Running:
    url: str
    proxy: Proxy
    replicas: LocalReplicas
    session: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def gateway(
    plane: ControlPlane,
    namespace: str,
    *,
    dead: int = 0,
    route: tuple[str, ...] = (),
    trusted: tuple[str, ...] = (),
    scale_wait: float = 60,
    **options: Any,
) -> AsyncIterator[Running]:
    """The gateway as `aima gateway serve` runs it (keys from Secrets, the units door), its replicas
    local."""
    settings = Settings(
        gateway_namespace=namespace,
        gateway_route_namespaces=route,
        gateway_scale_wait_seconds=scale_wait,
        gateway_retry_after_seconds=5,
        gateway_trusted_service_accounts=trusted,
        gateway_autoscale_interval_seconds=0.2,
    )
    async with contextlib.AsyncExitStack() as stack:
        kube: KubeClient = await connect(kubeconfig=plane.kubeconfig)
        stack.push_async_callback(kube.close)
        routes = ClusterRoutes(kube, home=namespace, namespaces=settings.gateway_routed_namespaces)
        await routes.start()
        stack.push_async_callback(routes.stop)
        replicas = LocalReplicas(routes, options=EngineOptions(**options), dead=dead)
        watcher = asyncio.create_task(replicas.run(stack))
        stack.callback(watcher.cancel)
        proxy = await stack.enter_async_context(open_gateway(settings, kube=kube, routes=replicas))
        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        app = gateway_server_app(settings, kube=kube, proxy=proxy, self_url=url)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, listener).start()
        session = await stack.enter_async_context(aiohttp.ClientSession())
        running = Running(url, proxy, replicas, session)
        await until(lambda: replicas.started >= 2, what="local engines for both chat replicas")
        yield running
    await asyncio.sleep(0.05)  # closed transports finish closing in the loop's next rounds


async def until(check: Any, *, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def post(
    running: Running, path: str, body: dict[str, Any], headers: dict[str, str] = AUTH
) -> tuple[int, dict[str, Any], Any]:
    async with running.session.post(running.url + path, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}]}


# -- tests ---------------------------------------------------------------------------------------


def test_routes_by_model_lists_models_and_answers_unknown_models_with_404(
    cluster: tuple[ControlPlane, str],
) -> None:
    async def scenario() -> None:
        async with gateway(*cluster) as running:
            status, headers, reply = await post(running, "/v1/chat/completions", CHAT)
            assert status == 200, reply
            assert reply["choices"][0]["message"]["content"].startswith("tok0")
            assert headers["X-Fake-Engine"] in running.replicas.engines
            engine = running.replicas.engines[headers["X-Fake-Engine"]]
            assert "authorization" not in {
                k.lower() for k in engine.stats.headers[-1]
            }  # keys stay in the gateway

            status, _, reply = await post(running, "/v1/completions", {"model": "nope", "prompt": "x"})
            assert status == 404
            assert reply["error"]["code"] == "model_not_found"
            assert reply["error"]["type"] == "invalid_request_error"

            async with running.session.get(running.url + "/v1/models", headers=AUTH) as response:
                models = [m["id"] for m in (await response.json())["data"]]
            assert models == ["chat", "loading", "sleepy"]

    asyncio.run(scenario())


def test_services_of_other_namespaces_are_routed_by_namespace_and_name(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, home = cluster
    other = f"{home}-other"
    plane.kubectl("create", "namespace", other)
    try:
        make_model(plane, other, ready=True)
        inference_service(plane, other, "chat")  # the same name as the home namespace's service
        eventually(lambda: ready_endpoints(plane, other, "chat") == 1, what="the other chat", timeout=120)

        async def scenario() -> None:
            async with gateway(plane, home, route=("*",)) as running:
                qualified = f"{other}/chat"
                await until(lambda: bool(running.proxy.routes.lookup(qualified)), what=qualified)
                async with running.session.get(running.url + "/v1/models", headers=AUTH) as response:
                    models = {m["id"] for m in (await response.json())["data"]}
                assert {"chat", "loading", "sleepy", qualified} <= models

                inner = running.replicas.inner
                for model in ("chat", qualified):
                    status, headers, reply = await post(
                        running, "/v1/chat/completions", CHAT | {"model": model}
                    )
                    assert status == 200, reply
                    assert headers["X-Fake-Engine"] in inner.lookup(model).endpoints  # type: ignore[union-attr]
                    # The engine is asked for the name it serves, as vLLM insists, not the qualified id.
                    engine = running.replicas.engines[headers["X-Fake-Engine"]]
                    assert engine.stats.bodies[-1]["model"] == "chat"
                    # ...and the answer names the model as the client did, so it can be asked again.
                    assert reply["model"] == model
                async with running.session.post(
                    running.url + "/v1/chat/completions",
                    json=CHAT | {"model": qualified, "stream": True},
                    headers=AUTH,
                ) as response:
                    events = [
                        line for line in (await response.read()).split(b"\n") if line.startswith(b"data: {")
                    ]
                assert events and all(json.loads(e[6:])["model"] == qualified for e in events)
                chat_only = {"Authorization": f"Bearer {KEY_CHAT_ONLY}"}
                status, _, reply = await post(
                    running, "/v1/chat/completions", CHAT | {"model": qualified}, chat_only
                )
                assert (status, reply["error"]["code"]) == (403, "model_not_allowed")

        asyncio.run(scenario())
    finally:
        plane.kubectl("delete", "namespace", other, "--wait=false")


def test_a_stream_passes_through_chunk_by_chunk(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, tokens=10, token_delay=0.1) as running:
            body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
            started = time.monotonic()
            arrivals: list[float] = []
            async with running.session.post(
                running.url + "/v1/chat/completions", json=body, headers=AUTH
            ) as response:
                assert response.headers["Content-Type"].startswith("text/event-stream")
                async for _ in response.content.iter_any():
                    arrivals.append(time.monotonic() - started)
            assert arrivals[0] < 0.3  # the first token, long before the stream's ~0.9 s end
            assert arrivals[-1] > 0.85
            assert len(arrivals) >= 8  # not coalesced into one write
            metrics = running.proxy.metrics.render()
            assert 'aima_gateway_tokens_total{model="chat",kind="completion"} 10' in metrics
            assert (
                'aima_gateway_time_to_first_byte_seconds_count{model="chat",route="/v1/chat/completions"} 1'
                in metrics
            )

    asyncio.run(scenario())


def test_a_stream_its_replica_breaks_off_breaks_off_for_the_client_too(
    cluster: tuple[ControlPlane, str],
) -> None:
    """An engine that dies mid-reply: the client's stream ends in an error, not in a proper end that
    would pass the first tokens off as the whole answer."""

    async def scenario() -> None:
        async with gateway(*cluster, tokens=10, token_delay=0.05, break_after_tokens=3) as running:
            received = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async with running.session.post(
                    running.url + "/v1/chat/completions", json=CHAT | {"stream": True}, headers=AUTH
                ) as response:
                    assert response.status == 200
                    async for chunk in response.content.iter_any():
                        received += chunk
            assert received.count(b"data: {") <= 3 and b"[DONE]" not in received

    asyncio.run(scenario())


def test_least_outstanding_requests_avoid_the_busy_replica(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, tokens=20, token_delay=0.1) as running:
            slow = asyncio.create_task(post(running, "/v1/completions", {"model": "chat", "prompt": "long"}))
            await until(
                lambda: any(e.stats.in_flight for e in running.replicas.engines.values()),
                what="the slow request",
            )
            busy = next(name for name, e in running.replicas.engines.items() if e.stats.in_flight)
            for engine in running.replicas.engines.values():
                engine.options.token_delay = 0.0
            quick = [
                await post(running, "/v1/completions", {"model": "chat", "prompt": "x"}) for _ in range(4)
            ]
            assert {headers["X-Fake-Engine"] for _, headers, _ in quick} == set(running.replicas.engines) - {
                busy
            }
            assert (await slow)[0] == 200

    asyncio.run(scenario())


def test_a_refused_connection_is_retried_on_another_replica(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, dead=1) as running:
            replies = [
                await post(running, "/v1/embeddings", {"model": "chat", "input": ["a", "b"]})
                for _ in range(4)
            ]
            assert [status for status, _, _ in replies] == [200] * 4
            assert len(replies[0][2]["data"]) == 2
            assert 'aima_gateway_upstream_retries_total{model="chat"} 1' in running.proxy.metrics.render()

    asyncio.run(scenario())


def test_a_client_that_leaves_cancels_the_upstream_request(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, tokens=100, token_delay=0.1) as running:
            body = CHAT | {"stream": True}
            async with running.session.post(
                running.url + "/v1/chat/completions", json=body, headers=AUTH
            ) as response:
                await response.content.readany()
                engine = running.replicas.engines[response.headers["X-Fake-Engine"]]
                assert engine.stats.in_flight == 1
            # Leaving the block closed the client's connection after the first token.
            await until(
                lambda: engine.stats.cancelled == 1, what="the engine to see the request cancelled", timeout=3
            )
            assert engine.stats.in_flight == 0
            assert engine.stats.completed == 0

    asyncio.run(scenario())


def test_api_keys_come_from_secrets_with_allowed_models_and_rate_limits(
    cluster: tuple[ControlPlane, str],
) -> None:
    async def scenario() -> None:
        async with gateway(*cluster) as running:
            status, _, reply = await post(running, "/v1/chat/completions", CHAT, headers={})
            assert (status, reply["error"]["code"]) == (401, "missing_api_key")
            status, _, reply = await post(
                running, "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-wrong"}
            )
            assert (status, reply["error"]["type"]) == (401, "authentication_error")

            chat_only = {"X-API-Key": KEY_CHAT_ONLY}
            assert (await post(running, "/v1/chat/completions", CHAT, headers=chat_only))[0] == 200
            status, _, reply = await post(
                running, "/v1/completions", {"model": "sleepy", "prompt": "x"}, headers=chat_only
            )
            assert (status, reply["error"]["code"]) == (403, "model_not_allowed")
            async with running.session.get(running.url + "/v1/models", headers=chat_only) as response:
                assert [m["id"] for m in (await response.json())["data"]] == ["chat"]

            limited = {"Authorization": f"Bearer {KEY_LIMITED}"}
            statuses = [
                (await post(running, "/v1/chat/completions", CHAT, headers=limited))[:2] for _ in range(3)
            ]
            assert [s for s, _ in statuses] == [200, 200, 429]
            # The minute's window is spent until the minute ends (aima.gateway.quotas).
            assert 1 <= int(statuses[2][1]["Retry-After"]) <= 60
            assert statuses[2][1]["x-ratelimit-remaining-requests"] == "0"

    asyncio.run(scenario())


def test_a_key_secret_created_later_is_picked_up(cluster: tuple[ControlPlane, str]) -> None:
    plane, namespace = cluster

    async def scenario() -> None:
        async with gateway(*cluster) as running:
            late = {"Authorization": "Bearer sk-late"}
            assert (await post(running, "/v1/chat/completions", CHAT, headers=late))[0] == 401
            secret = key_secret("late", "sk-late")
            await asyncio.to_thread(
                plane.apply, [secret | {"metadata": secret["metadata"] | {"namespace": namespace}}]
            )
            await until(
                lambda: running.proxy.keys is not None and running.proxy.keys.verify("sk-late") is not None,
                what="the new key",
            )
            assert (await post(running, "/v1/chat/completions", CHAT, headers=late))[0] == 200

    asyncio.run(scenario())


def test_a_service_still_loading_answers_503_with_retry_after(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster) as running:
            status, headers, reply = await post(running, "/v1/chat/completions", CHAT | {"model": "loading"})
            assert status == 503
            assert headers["Retry-After"] == "5"
            assert reply["error"]["code"] == "model_not_ready"

    asyncio.run(scenario())


def test_a_request_scales_a_service_up_from_zero_and_is_answered(cluster: tuple[ControlPlane, str]) -> None:
    plane, namespace = cluster
    assert replicas(plane, namespace, "sleepy") == 0

    async def scenario() -> None:
        async with gateway(*cluster) as running:
            started = time.monotonic()
            status, headers, reply = await post(
                running, "/v1/completions", {"model": "sleepy", "prompt": "wake up"}
            )
            assert status == 200, reply
            assert time.monotonic() - started < 60
            assert headers["X-Fake-Engine"] in running.replicas.engines
            assert 'aima_gateway_scale_from_zero_total{model="sleepy"} 1' in running.proxy.metrics.render()

    asyncio.run(scenario())
    assert replicas(plane, namespace, "sleepy") == 1


def test_audio_transcription_upload_and_streamed_speech(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, token_delay=0.05, audio_chunk=8000) as running:
            form = aiohttp.FormData()
            form.add_field("file", wav_bytes(seconds=1.0), filename="hello.wav", content_type="audio/wav")
            form.add_field("model", "chat")
            form.add_field("response_format", "verbose_json")
            async with running.session.post(
                running.url + "/v1/audio/transcriptions", data=form, headers=AUTH
            ) as response:
                assert response.status == 200
                reply = await response.json()
            assert reply["duration"] == 1.0
            assert reply["text"] == "transcribed 32044 bytes from hello.wav"

            body = {"model": "chat", "input": " ".join(["word"] * 20), "voice": "alloy"}
            chunks: list[bytes] = []
            async with running.session.post(
                running.url + "/v1/audio/speech", json=body, headers=AUTH
            ) as response:
                assert response.headers["Content-Type"] == "audio/wav"
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
            audio = b"".join(chunks)
            assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
            assert len(audio) == 44 + 2 * 16000  # 20 words x 0.05 s of 16-bit mono at 16 kHz
            assert len(chunks) > 1

    asyncio.run(scenario())


def test_metrics_count_requests_by_model_route_and_status(cluster: tuple[ControlPlane, str]) -> None:
    async def scenario() -> None:
        async with gateway(*cluster) as running:
            await post(running, "/v1/chat/completions", CHAT)
            await post(running, "/v1/chat/completions", CHAT | {"model": "nope"})
            async with running.session.get(running.url + "/metrics") as response:
                text = await response.text()
            assert (
                'aima_gateway_requests_total{model="chat",route="/v1/chat/completions",code="200"} 1' in text
            )
            assert 'aima_gateway_requests_total{model="",route="/v1/chat/completions",code="404"} 1' in text
            assert 'aima_gateway_tokens_total{model="chat",kind="prompt"} 2' in text
            assert 'aima_gateway_in_flight{model="chat"} 0' in text
            assert "aima_gateway_request_duration_seconds_bucket" in text

    asyncio.run(scenario())


def test_aima_gateway_serve_answers_v1_and_the_units_with_one_metrics(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, namespace = cluster
    port = free_port()
    command = [str(Path(sys.executable).with_name("aima")), "gateway", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--namespace", namespace, "--kubeconfig", str(plane.kubeconfig)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    async def scenario() -> None:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # start-up imports take seconds on a loaded machine
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(url + "/healthz") as response:
                        if response.status == 200:
                            break
                assert server.poll() is None, "aima gateway serve exited"
                await asyncio.sleep(0.1)
            async with session.get(url + "/v1/models", headers=AUTH) as response:
                assert [m["id"] for m in (await response.json())["data"]] == ["chat", "loading", "sleepy"]
            async with session.get(url + "/api/v2/units") as response:
                assert response.status == 401  # the units door takes the gateway's keys
            async with session.get(url + "/api/v2/units", headers=UNITS_READ) as response:
                assert response.status == 200
            async with session.get(url + "/metrics") as response:
                text = await response.text()
            assert (
                'aima_gateway_requests_total{model="",route="/v1/models"' not in text
            )  # GETs are not proxied
            assert "aima_unit_requests_total" in text
            assert "aima_gateway_in_flight" in text

    try:
        asyncio.run(scenario())
    finally:
        server.terminate()
        # SIGTERM drains (nothing is in flight here) and exits cleanly, not killed by the signal.
        code = server.wait(timeout=10)
        assert server.stderr is not None
        server.stderr.close()
    assert code == 0


def test_the_units_door_takes_only_keys_that_grant_it_and_calls_models_through_this_gateway(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, namespace = cluster
    chat = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}

    async def scenario() -> None:
        async with gateway(*cluster, voices=("alloy", "nova")) as running:
            status, _, reply = await post(running, "/api/v2/query/service.list", {}, headers=AUTH)
            assert status == 403 and reply["error"]["code"] == "FORBIDDEN"
            assert "data.units" in reply["error"]["message"]
            # inference.* in the door call this same gateway over loopback with a key of its own.
            status, _, reply = await post(running, "/api/v2/query/inference.chat", chat, headers=UNITS_READ)
            assert status == 200, reply
            assert reply["data"]["content"].startswith("tok0")
            status, _, reply = await post(
                running, "/api/v2/query/inference.voices", {"model": "chat"}, headers=UNITS_READ
            )
            assert (status, reply["data"]["voices"]) == (200, ["alloy", "nova"])
            scale = {"name": "chat", "replicas": 3}
            status, _, reply = await post(running, "/api/v2/command/service.scale", scale, headers=UNITS_READ)
            assert status == 403 and "queries only" in reply["error"]["message"]
            envelope = {"type": "command", "unit": "service.scale", "input": scale}
            assert (await post(running, "/api/v2/execute", envelope, headers=UNITS_READ))[0] == 403
            status, _, reply = await post(
                running, "/api/v2/execute", envelope | {"input": scale | {"replicas": 2}}, headers=UNITS_WRITE
            )
            assert status == 200, reply

    asyncio.run(scenario())
    assert replicas(plane, namespace, "chat") == 2


def test_the_voices_of_a_speech_model_are_routed_by_its_query_parameter(
    cluster: tuple[ControlPlane, str],
) -> None:
    async def scenario() -> None:
        async with gateway(*cluster, voices=("alloy",)) as running:
            async with running.session.get(
                running.url + "/v1/audio/voices", params={"model": "chat"}, headers=AUTH
            ) as response:
                assert (response.status, await response.json()) == (200, {"voices": ["alloy"]})
            async with running.session.get(running.url + "/v1/audio/voices", headers=AUTH) as response:
                assert response.status == 400
                assert (await response.json())["error"]["param"] == "model"

    asyncio.run(scenario())


def test_a_trusted_service_account_token_for_the_gateway_audience_is_a_key(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, namespace = cluster
    for account in ("pipelines", "stranger"):
        plane.kubectl("create", "serviceaccount", account, "-n", namespace)

    def token(account: str, *audience: str) -> dict[str, str]:
        command = ["create", "token", account, "-n", namespace, *(f"--audience={a}" for a in audience)]
        return {"Authorization": f"Bearer {plane.kubectl(*command).stdout.strip()}"}

    async def scenario() -> None:
        async with gateway(*cluster, trusted=(f"{namespace}/pipelines",)) as running:
            assert (await post(running, "/v1/chat/completions", CHAT, token("pipelines", "aima-gateway")))[
                0
            ] == 200
            # A token for the API server, or of an account the gateway does not trust, is no key.
            assert (await post(running, "/v1/chat/completions", CHAT, token("pipelines")))[0] == 401
            assert (await post(running, "/v1/chat/completions", CHAT, token("stranger", "aima-gateway")))[
                0
            ] == 401
            # Nor does it open the units door.
            status, _, _ = await post(
                running, "/api/v2/query/service.list", {}, token("pipelines", "aima-gateway")
            )
            assert status == 403

    asyncio.run(scenario())


def test_the_autoscaler_follows_the_requests_in_flight_up_and_back_down_to_zero(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, namespace = cluster
    bounds = {"minReplicas": 0, "maxReplicas": 3, "targetActiveRequests": 1, "scaleDownDelaySeconds": 2}
    inference_service(plane, namespace, "elastic", replicas=1, autoscaling=bounds)
    eventually(
        lambda: ready_endpoints(plane, namespace, "elastic") == 1, what="elastic's replica", timeout=60
    )

    async def count() -> int | None:
        return await asyncio.to_thread(replicas, plane, namespace, "elastic")

    async def scenario() -> None:
        async with gateway(*cluster, token_delay=0.4) as running:
            body = {"model": "elastic", "prompt": "busy"}
            calls = [asyncio.create_task(post(running, "/v1/completions", body)) for _ in range(3)]
            deadline = time.monotonic() + 20
            while await count() != 3:  # one replica per request in flight
                assert time.monotonic() < deadline, "the autoscaler did not scale up to 3"
                await asyncio.sleep(0.2)
            assert [status for status, _, _ in await asyncio.gather(*calls)] == [200, 200, 200]
            deadline = time.monotonic() + 30
            while await count() != 0:  # idle for longer than scaleDownDelaySeconds
                assert time.monotonic() < deadline, "the autoscaler did not scale down to zero"
                await asyncio.sleep(0.2)

    asyncio.run(scenario())


def test_a_wake_from_zero_that_outlasts_its_bound_answers_503_with_retry_after(
    cluster: tuple[ControlPlane, str],
) -> None:
    plane, namespace = cluster
    # Its Model is still downloading: scaled up, it cannot get a ready replica in time.
    inference_service(
        plane, namespace, "drowsy", model="big", replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 1}
    )

    async def scenario() -> None:
        async with gateway(*cluster, scale_wait=1.5) as running:
            await until(lambda: running.proxy.routes.lookup("drowsy") is not None, what="drowsy routed")
            started = time.monotonic()
            status, headers, reply = await post(
                running, "/v1/completions", {"model": "drowsy", "prompt": "hi"}
            )
            assert (status, reply["error"]["code"]) == (503, "model_starting")
            assert headers["Retry-After"] == "5"
            assert 1.4 < time.monotonic() - started < 10  # it waited for its bound, then answered

    asyncio.run(scenario())
    assert replicas(plane, namespace, "drowsy") == 1  # the wake-up itself was written
