"""Balancing on the engines' own load: reading their /metrics, scoring replicas, scraping them, and
the per-service signals the gateway exports for other autoscalers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import aiohttp
import pytest

from aima.gateway import create_app, open_gateway
from aima.gateway.autoscaling import signal_lines, signals
from aima.gateway.balancer import Balancer, prefix_affinity
from aima.gateway.engine_load import EngineLoad, EngineReport, EngineScraper, parse, score, scores
from aima.gateway.routes import Backend, ServiceView, StaticRoutes
from aima.settings import Settings
from aima_testenv.engines import EngineOptions, FakeEngine
from fakes.serving import running

pytestmark = pytest.mark.unit

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
VLLM = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 18342.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 4.281503744e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 12.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.8712
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.8712
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="{MODEL}"}} 7.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="{MODEL}"}} 1.234567e+06
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",model_name="{MODEL}"}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 4521.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="{MODEL}"}} 4521.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 812.4410719871521
"""
VLLM_DATA_PARALLEL = """\
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:num_requests_running{engine="1",model_name="m"} 6.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
"""
LLAMA_CPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 2048
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 512
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 1336.81
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 1.7
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.25
# HELP llamacpp:kv_cache_tokens KV-cache tokens.
# TYPE llamacpp:kv_cache_tokens gauge
llamacpp:kv_cache_tokens 1024
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""
SGLANG = """\
sglang:num_running_reqs{model_name="qwen",engine_type="unified"} 5.0
sglang:num_queue_reqs{model_name="qwen",engine_type="unified"} 9.0
sglang:token_usage{model_name="qwen",engine_type="unified"} 0.61
sglang:gen_throughput{model_name="qwen",engine_type="unified"} 812.3
"""
A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


@pytest.mark.parametrize(
    ("text", "load"),
    [
        (VLLM, EngineLoad(waiting=3, running=12, kv_usage=0.8712)),
        (VLLM_DATA_PARALLEL, EngineLoad(waiting=2, running=10, kv_usage=0.5)),
        (LLAMA_CPP, EngineLoad(waiting=1, running=2, kv_usage=0.25)),
        (SGLANG, EngineLoad(waiting=9, running=5, kv_usage=0.61)),
    ],
    ids=["vllm", "vllm data-parallel: counts summed, the fullest cache", "llama.cpp", "sglang"],
)
def test_the_engines_load_is_read_from_their_metrics(text: str, load: EngineLoad) -> None:
    assert parse(text) == load


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# HELP infinity_embeddings_total x\ninfinity_embeddings_total 12\n",
        "vllm:num_requests_running{engine=0} not-a-number\nvllm:num_requests_waiting\n"
        "vllm:num_requests_running NaN\n",
    ],
    ids=["empty", "another engine's names", "unreadable lines"],
)
def test_a_text_without_the_names_is_no_load(text: str) -> None:
    assert parse(text) is None


def test_label_values_with_spaces_and_braces_and_timestamps_are_read() -> None:
    text = 'vllm:num_requests_running{model_name="my model {v2}"} 3 1712345678000\n'
    assert parse(text) == EngineLoad(waiting=0, running=3, kv_usage=None)


def test_the_score_weighs_the_queue_and_adds_what_was_sent_since_the_scrape() -> None:
    report = EngineReport(load=EngineLoad(waiting=3, running=12, kv_usage=0.5), ours=4)
    assert score(report, outstanding=4) == 2 * 3 + 12
    assert score(report, outstanding=7) == 2 * 3 + 12 + 3  # three sent since
    assert score(report, outstanding=0) == 2 * 3 + 12 - 4  # four ended since
    assert score(None, outstanding=5) == 5  # exports nothing: the gateway's own count


@pytest.mark.parametrize(("kv_usage", "added"), [(None, 0), (0.5, 0), (0.8, 0), (0.9, 2), (1.0, 4)])
def test_a_kv_cache_near_full_weighs_up_to_four_requests(kv_usage: float | None, added: float) -> None:
    report = EngineReport(load=EngineLoad(waiting=0, running=2, kv_usage=kv_usage), ours=0)
    assert score(report, outstanding=0) == pytest.approx(2 + added)


def test_a_replica_that_reports_a_queue_is_passed_over_while_the_gateway_counts_are_equal() -> None:
    reports = {A: EngineReport(load=EngineLoad(waiting=20, running=8, kv_usage=0.95), ours=0)}
    balancer = Balancer(engine_reports=reports)
    assert {balancer.pick([A, B]) for _ in range(10)} == {B}
    assert scores([A, B], outstanding={}, reports=reports) == {A: pytest.approx(40 + 8 + 3), B: 0}


def test_replicas_that_report_nothing_are_balanced_by_requests_in_flight() -> None:
    balancer = Balancer(engine_reports={})
    balancer.acquire(A)
    assert A not in {balancer.pick([A, B, C]) for _ in range(10)}


def test_prefix_affinity_bounds_load_by_requests_in_flight_not_by_the_score() -> None:
    key = b"a shared system prompt"
    preferred = prefix_affinity([A, B, C], {}, key=key, load_factor=1.25)
    queued = {preferred: EngineReport(load=EngineLoad(waiting=10, running=8, kv_usage=1.0), ours=0)}
    balancer = Balancer(engine_reports=queued, load_factor=1.25)
    assert balancer.pick([A, B, C], affinity=key) == preferred  # its queue keeps the cached prefix
    assert preferred not in {balancer.pick([A, B, C]) for _ in range(10)}  # without affinity: the score
    for _ in range(3):  # with this request 4 in flight, bound ceil(1.25 * 4/3) + 1 = 3
        balancer.acquire(preferred)
    assert balancer.pick([A, B, C], affinity=key) != preferred


def test_the_signals_of_a_service_sum_its_replicas_queues_and_average_their_caches() -> None:
    service = ServiceView(
        name="chat", namespace="team-a", served_name=None, replicas=3, suspended=False, scale_from_zero=False
    )
    backend = Backend(service=service, endpoints=(A, B, C), model="team-a/chat")
    reports = {
        A: EngineReport(load=EngineLoad(waiting=2, running=8, kv_usage=0.5), ours=0),
        B: EngineReport(load=EngineLoad(waiting=1, running=4, kv_usage=0.25), ours=0),
        "http://gone:8000": EngineReport(load=EngineLoad(waiting=50, running=50, kv_usage=1), ours=0),
    }
    lines = signal_lines(signals([backend], in_flight=Counter({"team-a/chat": 7}), reports=reports))
    labels = '{namespace="team-a",service="chat"}'
    for line in [
        f"aima_gateway_service_in_flight{labels} 7",
        f"aima_gateway_service_replicas{labels} 3",
        f"aima_gateway_service_ready_replicas{labels} 3",
        f"aima_gateway_engine_reporting_replicas{labels} 2",
        f"aima_gateway_engine_requests_waiting{labels} 3",
        f"aima_gateway_engine_requests_running{labels} 12",
        f"aima_gateway_engine_kv_cache_usage{labels} 0.375",
        "# TYPE aima_gateway_engine_requests_waiting gauge",
    ]:
        assert line in lines


def service(name: str, replicas: int = 1) -> ServiceView:
    return ServiceView(
        name=name, namespace="ns", served_name=None, replicas=replicas, suspended=False, scale_from_zero=False
    )


def test_the_scraper_reads_each_replica_and_forgets_those_that_left() -> None:
    async def scenario() -> None:
        busy = FakeEngine(EngineOptions(extra_waiting=5, kv_cache_usage=0.5))
        silent = FakeEngine(EngineOptions(metrics=False))
        async with busy.serve() as busy_url, silent.serve() as silent_url:
            table = {"m": Backend(service=service("m", 3), endpoints=(busy_url, silent_url, GONE), model="m")}
            reports: dict[str, EngineReport] = {}
            async with aiohttp.ClientSession() as session:
                scraper = EngineScraper(
                    StaticRoutes(table),
                    session=session,
                    reports=reports,
                    outstanding=lambda _: 2,
                    interval=0.5,
                )
                await scraper.scrape()
                assert reports == {
                    busy_url: EngineReport(load=EngineLoad(waiting=5, running=0, kv_usage=0.5), ours=2)
                }
                table["m"] = Backend(service=service("m"), endpoints=(silent_url,), model="m")
                scraper = EngineScraper(
                    StaticRoutes(table),
                    session=session,
                    reports=reports,
                    outstanding=lambda _: 0,
                    interval=0.5,
                )
                await scraper.scrape()
                assert reports == {}
        assert busy.stats.requests == 0  # scrapes are not requests

    asyncio.run(scenario())


GONE = "http://127.0.0.1:9"


async def chat(session: aiohttp.ClientSession, url: str, **extra: Any) -> aiohttp.ClientResponse:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]} | extra
    async with session.post(url + "/v1/chat/completions", json=body) as reply:
        await reply.read()
        return reply


def test_through_the_gateway_a_replica_with_a_long_queue_gets_fewer_requests() -> None:
    """Two replicas the gateway has no request in flight to: one reports a long queue (other clients
    fill it), the other is idle. Without the engines' metrics they would take turns."""

    async def scenario(aware: bool) -> tuple[int, int]:
        queued = FakeEngine(EngineOptions(name="queued", extra_waiting=30))
        idle = FakeEngine(EngineOptions(name="idle"))
        async with contextlib.AsyncExitStack() as stack:
            urls = [await stack.enter_async_context(e.serve()) for e in (queued, idle)]
            routes = StaticRoutes(
                {"chat": Backend(service=service("chat", 2), endpoints=tuple(urls), model="chat")}
            )
            settings = Settings(
                gateway_require_api_key=False,
                gateway_engine_metrics_interval_seconds=0.05,
                gateway_engine_aware_balancing=aware,
            )
            proxy = await stack.enter_async_context(open_gateway(settings, kube=None, routes=routes))
            gateway = await stack.enter_async_context(running(create_app(proxy)))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            await asyncio.sleep(0.2)  # a few scrapes
            for _ in range(20):
                assert (await chat(session, gateway)).status == 200
            metrics = await (await session.get(gateway + "/metrics")).text()
            assert 'aima_gateway_engine_requests_waiting{namespace="ns",service="chat"} 30' in metrics
        return queued.stats.requests, idle.stats.requests

    assert asyncio.run(scenario(aware=True)) == (0, 20)
    assert asyncio.run(scenario(aware=False)) == (10, 10)
