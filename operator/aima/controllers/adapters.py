"""The engine side of LoRA adapters: ask each ready replica which adapters it holds, and load or
unload them through the engine's adapter API (the planning is `aima.domain.adapters`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from aima.api.engine import AdapterApi, Engine
from aima.domain import adapters as planning

Body = dict[str, Any]

_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)
"""Loading an adapter reads its weights into the engine: seconds, not minutes."""


async def observe(
    pods: Sequence[Body], *, engine: Engine, http: aiohttp.ClientSession
) -> list[planning.Replica]:
    """The ready replicas among ``pods`` and what each engine holds."""
    ready = [p for p in pods if _ready(p)]
    return list(await asyncio.gather(*(_ask(p, engine=engine, http=http) for p in ready)))


async def perform(
    actions: Sequence[planning.Action], *, engine: Engine, http: aiohttp.ClientSession
) -> tuple[list[planning.Replica], dict[tuple[str, str], str]]:
    """Carry out ``actions``; the replicas as they hold adapters afterwards (those the actions touched)
    and the refusals, (pod, adapter) -> the engine's words."""
    results = await asyncio.gather(*(_call(a, engine=engine, http=http) for a in actions))
    held: dict[str, set[str]] = {}
    replicas: dict[str, planning.Replica] = {}
    failures: dict[tuple[str, str], str] = {}
    for action, refusal in zip(actions, results, strict=True):
        pod = action.replica.pod
        replicas[pod] = action.replica
        holding = held.setdefault(pod, set(action.replica.loaded or ()))
        if refusal is not None:
            failures[(pod, action.adapter)] = refusal
        elif action.verb == "load":
            holding.add(action.adapter)
        else:
            holding.discard(action.adapter)
    after = [dataclasses.replace(replicas[pod], loaded=frozenset(names)) for pod, names in held.items()]
    return after, failures


async def _ask(pod: Body, *, engine: Engine, http: aiohttp.ClientSession) -> planning.Replica:
    name, url = pod["metadata"]["name"], f"http://{pod['status']['podIP']}:{engine.spec.port}"
    try:
        async with http.get(f"{url}/v1/models", timeout=_TIMEOUT) as reply:
            if reply.status != 200:
                return planning.Replica(
                    pod=name, url=url, loaded=None, error=f"GET /v1/models answered {reply.status}"
                )
            listed = (await reply.json()).get("data") or []
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return planning.Replica(pod=name, url=url, loaded=None, error=str(error) or type(error).__name__)
    # vLLM lists each loaded adapter with its base model as parent; the base itself has none.
    loaded = frozenset(str(m["id"]) for m in listed if isinstance(m, dict) and m.get("parent"))
    return planning.Replica(pod=name, url=url, loaded=loaded)


async def _call(action: planning.Action, *, engine: Engine, http: aiohttp.ClientSession) -> str | None:
    """One load or unload; None when the engine took it, else its reason."""
    assert engine.spec.adapters is not None and engine.spec.adapters.api is AdapterApi.VLLM
    body: Body = {"lora_name": action.adapter}
    if action.verb == "load":
        body["lora_path"] = action.path
    url = f"{action.replica.url}/v1/{action.verb}_lora_adapter"
    try:
        async with http.post(url, json=body, timeout=_TIMEOUT) as reply:
            if reply.status == 200:
                return None
            text = await reply.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        return f"{action.verb} did not reach the engine: {error or type(error).__name__}"
    return f"{reply.status}: {_engine_message(text)}"


def _engine_message(text: str) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    try:
        found = json.loads(text)
    except ValueError:
        return text[:500]
    error = found.get("error") if isinstance(found, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:1000] if message else text[:500]


def _ready(pod: Body) -> bool:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
