"""Operator benchmark (not a test): apply -> Deployment -> Ready latency, and a cold start at scale.

Runs a local control plane (kwok makes pods Ready at once) and the operator as its own process
(`aima operator run`), and measures against floors taken in the same run on the same machine:

- latency: the API server's own create-to-watch-event time for a Deployment posted directly;
- cold start: N services and N Models (each reported downloaded by its loader) declared while no
  operator runs, then one started: the floor is the same writes the operator must make (server-side
  apply of each service's Deployment and Service, a status patch for each service and Model),
  rendered by the same planning code and sent by a bare client with the operator's concurrency, no
  watches, no reads. The control plane's CPU seconds are printed for both, since on a small machine
  it, not the operator, may set the pace. Then the operator is restarted with nothing to do and its
  writes are counted in the API server's audit log (the target is none).

    .venv/bin/python hack/bench/operator_reconcile.py --services 200 --cold 1000
    .venv/bin/python hack/bench/operator_reconcile.py --services 0 --cold 10000   # issue 21's scale

Targets (issue 5): p50 apply->Deployment under 100 ms; 1,000 services settled from a cold start
in under 60 s; operator peak RSS under 300 MB. Issue 21: 10,000 of each against the floor, memory,
and a restart that writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aima.controllers.inference_service import engine_ingress
from aima.controllers.model import loader_settings
from aima.domain import inference_service as planning
from aima.domain import model as model_planning
from aima.domain.objects import status_patch
from aima.kube import KubeClient, connect, resources
from aima.settings import Settings
from aima_testenv import ControlPlane, ensure_binaries, fleet
from aima_testenv.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
COLD_NAMESPACE = "bench-cold"
FLOOR_NAMESPACE = "bench-floor"
Body = dict[str, Any]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def service(name: str, namespace: str, *, replicas: int) -> Body:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "modelRef": {"name": "tiny"},
            "replicas": replicas,
            "resources": {"gpus": 0, "requests": {"cpu": "10m", "memory": "16Mi"}},
            # CPU pods may use the GPU nodes too: one kwok node holds only 110 pods.
            "scheduling": {
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            },
        },
    }


def ready_model(plane: ControlPlane, namespace: str) -> None:
    """A GGUF Model whose download is declared done (no loader runs in a benchmark)."""
    plane.kubectl("create", "namespace", namespace)
    plane.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny", "namespace": namespace},
                "spec": {
                    "source": "hf://acme/tiny-gguf@main",
                    "type": "LLM",
                    "format": "GGUF",
                    "cache": {"size": "1Gi"},
                },
            }
        ]
    )
    job = ""
    while not job:
        job = plane.kubectl(
            "get", "model", "tiny", "-n", namespace, "-o", "jsonpath={.status.loaderJob}"
        ).stdout
        time.sleep(0.2)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    done = {"status": "True", "reason": "Ready", "message": "Declared done", "lastTransitionTime": now}
    status = {
        "loaderJob": job,
        "phase": "Ready",
        "format": "GGUF",
        "weightsFile": "tiny.gguf",
        "conditions": [{"type": "Downloaded", **done}, {"type": "Ready", **done}],
    }
    patch = json.dumps({"status": status})
    plane.kubectl(
        "patch", "model", "tiny", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )


# ---- process accounting ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_used(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """CPU seconds each named process uses inside the block (filled in when it ends)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    used: dict[str, float] = {}
    try:
        yield used
    finally:
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                used[name] = cpu_seconds(pid) - before[name]


def plane_pids(plane: ControlPlane) -> dict[str, int]:
    return {c.name: c.pid for c in plane.components if c.pid is not None}


def report_cpu(label: str, used: dict[str, float], *, seconds: float) -> None:
    parts = ", ".join(f"{name} {value:.1f}" for name, value in sorted(used.items(), key=lambda kv: -kv[1]))
    say(f"  {label} CPU seconds in {seconds:.1f} s on {os.cpu_count()} cores: {parts}")


# ---- latency ---------------------------------------------------------------------------------------


async def watch_times(
    kube: KubeClient,
    resource: resources.Resource,
    namespace: str,
    *,
    seen: dict[str, float],
    ready: dict[str, float] | None = None,
) -> None:
    """Record when each object first appears in ``seen`` and, with ``ready``, when it first reports
    Ready=True (an InferenceService) or a ready replica (a Deployment)."""
    async for event in kube.watch(resource, namespace=namespace):
        obj = event["object"]
        name = obj["metadata"]["name"]
        now = time.perf_counter()
        seen.setdefault(name, now)
        status = obj.get("status", {})
        conditions = status.get("conditions", [])
        is_ready = status.get("readyReplicas", 0) > 0 if obj["kind"] == "Deployment" else False
        is_ready = is_ready or any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if ready is not None and is_ready:
            ready.setdefault(name, now)


async def latency(kube: KubeClient, *, count: int, rate: float) -> dict[str, list[float]]:
    """Create ``count`` services at ``rate`` per second; also time direct Deployment creates."""
    created: dict[str, float] = {}
    deployments: dict[str, float] = {}
    deployments_ready: dict[str, float] = {}
    ready: dict[str, float] = {}
    watchers = [
        asyncio.create_task(
            watch_times(kube, resources.DEPLOYMENTS, NAMESPACE, seen=deployments, ready=deployments_ready)
        ),
        asyncio.create_task(watch_times(kube, resources.INFERENCE_SERVICES, NAMESPACE, seen={}, ready=ready)),
    ]
    await asyncio.sleep(1)
    # Services and floor Deployments alternate, half a period apart, so that both see the same
    # (drifting) load on a shared machine without landing in the API server at the same instant.
    for i in range(count):
        name = f"svc-{i:04d}"
        created[name] = time.perf_counter()
        await kube.create(service(name, NAMESPACE, replicas=1))
        await asyncio.sleep(0.5 / rate)
        floor = f"floor-{i:04d}"
        created[floor] = time.perf_counter()
        await kube.create(baseline_deployment(floor))
        await asyncio.sleep(0.5 / rate)
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and (len(ready) < count or len(deployments) < 2 * count):
        await asyncio.sleep(0.2)
    for task in watchers:
        task.cancel()
    return {
        "floor": [deployments[n] - created[n] for n in created if n.startswith("floor") and n in deployments],
        "deployment": [
            deployments[n] - created[n] for n in created if n.startswith("svc") and n in deployments
        ],
        "deployment ready": [deployments_ready[n] - created[n] for n in created if n in deployments_ready],
        "ready": [ready[n] - created[n] for n in created if n in ready],
    }


def baseline_deployment(name: str) -> Body:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }


def report_latency(found: dict[str, list[float]], *, count: int) -> None:
    floor = percentile([v * 1000 for v in found["floor"]], 0.5)
    say(f"apply -> Deployment, {count} services at a fixed rate (ms):")
    for key in ("floor", "deployment", "deployment ready", "ready"):
        values = [v * 1000 for v in found[key]]
        label = {
            "floor": "API floor (direct Deployment)",
            "deployment": "operator: Deployment created",
            "deployment ready": "  its Deployment has a ready pod",
            "ready": "operator: status Ready",
        }[key]
        say(
            f"  {label:34s} n={len(values):4d}  p50 {percentile(values, 0.5):7.1f}  p99 "
            f"{percentile(values, 0.99):7.1f}  p50/floor {percentile(values, 0.5) / floor:5.1f}x"
        )


# ---- cold start ------------------------------------------------------------------------------------


def operator_process(plane: ControlPlane) -> OperatorProcess:
    settings = Settings(kubeconfig=plane.kubeconfig, catalog_dir=ROOT / "catalog")
    return OperatorProcess(settings, log=plane.workdir / "logs" / "operator.log")


async def cold_start(plane: ControlPlane, kube: KubeClient, *, count: int) -> None:
    """``count`` services and ``count`` Models declared with no operator running, then one started;
    then restarted with nothing to do, counting its writes."""
    declared = time.perf_counter()
    await fleet.declare(kube, COLD_NAMESPACE, count=count)
    say(
        f"cold start: {count} Models (reported downloaded) and {count} services declared in "
        f"{time.perf_counter() - declared:.1f} s"
    )
    operator = operator_process(plane)
    pids = plane_pids(plane)
    started = time.perf_counter()
    operator.start()
    try:
        with cpu_used(pids | {"operator": operator.pid}) as used:
            services, models = await fleet.settled(kube, COLD_NAMESPACE, count=count, timeout=1800)
            elapsed = time.perf_counter() - started
            rss = operator.peak_rss_mib()
        # "Settled" is a status for every generation, not the end of the work queued: the operator
        # finishes it before it stops, as the end-to-end test's does, or the restart would do it.
        await asyncio.sleep(2)
    finally:
        operator.stop()
    say(
        f"cold start: {services} of {count} services and {models} of {count} Models settled in "
        f"{elapsed:.1f} s (process start included); operator peak RSS {rss:.0f} MiB"
    )
    report_cpu("cold start", used, seconds=elapsed)
    quiet_from = plane.audit_log.stat().st_size
    started = time.perf_counter()
    with operator:
        while operator.passes("InferenceService") < count or operator.passes("Model") < count:
            await asyncio.sleep(0.5)
        passed = time.perf_counter() - started
        await asyncio.sleep(1)  # a write the last pass made reaches the audit log
        writes = operator_writes(plane, quiet_from, namespace=COLD_NAMESPACE)
    say(f"restart: every object passed over in {passed:.1f} s; writes made: {sum(writes.values())}")
    for (verb, resource, subresource), count in sorted(writes.items()):
        say(f"  {count} x {verb} {resource}{'/' + subresource if subresource else ''}")


def operator_writes(plane: ControlPlane, offset: int, *, namespace: str) -> Counter[tuple[str, str, str]]:
    """The operator's audited writes in ``namespace`` after byte ``offset`` of the audit log, by verb,
    resource and subresource."""
    with plane.audit_log.open("rb") as log:
        log.seek(offset)
        whole = log.read().rpartition(b"\n")[0]  # the last line may still be being written
        entries = [json.loads(line) for line in whole.splitlines() if line.strip()]
    return Counter(
        (e["verb"], ref.get("resource", ""), ref.get("subresource", ""))
        for e in entries
        if (ref := e.get("objectRef", {})).get("namespace") == namespace
        and e.get("userAgent", "").startswith("aima/")
    )


async def bare_writes(plane: ControlPlane, kube: KubeClient, *, count: int) -> None:
    """The floor of the cold start: the operator's writes for ``count`` services and Models sent by a
    bare client.

    Children and statuses are rendered beforehand by the operator's own planning code; what is timed
    is only the API server (and the controller-manager, reacting to the Deployments as it does in
    the real run) accepting them.
    """
    plane.kubectl("create", "namespace", FLOOR_NAMESPACE)
    bodies = await fleet.declare(kube, FLOOR_NAMESPACE, count=count)
    models = {m["metadata"]["name"]: m for m in await kube.list(resources.MODELS, namespace=FLOOR_NAMESPACE)}
    engines, nodes = await kube.list(resources.ENGINES), await kube.list(resources.NODES)
    now = datetime.datetime.now(datetime.UTC)
    settings = Settings()
    loader = loader_settings(settings)
    writes: list[Callable[[], Awaitable[Any]]] = []
    for body in bodies:
        model = models[body["spec"]["modelRef"]["name"]]
        model_observed = model_planning.Observed(claim=None, job=None, gpu_memory_mib=None)
        model_plan = model_planning.plan(model, settings=loader, observed=model_observed)
        model_status = model_planning.compute_status(model, plan=model_plan, observed=model_observed, now=now)
        patch = status_patch(model_status, observed=model.get("status"), others=model_planning.LOADER_FIELDS)
        writes.append(status_write(kube, resources.MODELS, model, patch))
        # The service is planned against its Model as the operator's pass over it leaves it.
        model = model | {"status": model["status"] | (patch or {})}
        observed = planning.Observed(model=model, engines=engines, nodes=nodes)
        plan = planning.plan(body, observed=observed, ingress=engine_ingress(settings))
        status = planning.compute_status(body, plan=plan, observed=observed, now=now)
        writes += [functools.partial(kube.apply, child) for child in plan.objects]
        writes.append(
            status_write(kube, resources.INFERENCE_SERVICES, body, status_patch(status, observed=None))
        )
    started = time.perf_counter()
    with cpu_used(plane_pids(plane)) as used:
        await fleet.gathered(writes)
        elapsed = time.perf_counter() - started
    say(
        f"cold-start floor: the same {len(writes)} writes for {count} services and Models from a bare "
        f"client ({fleet.CONCURRENCY} at a time) took {elapsed:.1f} s"
    )
    report_cpu("floor", used, seconds=elapsed)


def status_write(
    kube: KubeClient, resource: resources.Resource, body: Body, status: Body | None
) -> Callable[[], Awaitable[Any]]:
    meta = body["metadata"]
    return functools.partial(
        kube.patch_status, resource, name=meta["name"], namespace=meta["namespace"], status=status or {}
    )


async def main_async(plane: ControlPlane, *, services: int, cold: int, rate: float) -> None:
    kube = await connect(kubeconfig=plane.kubeconfig)
    try:
        if services:
            with operator_process(plane) as operator:
                await asyncio.sleep(5)
                report_latency(await latency(kube, count=services, rate=rate), count=services)
                say(f"  operator peak RSS {operator.peak_rss_mib():.0f} MiB")
        if cold:
            await cold_start(plane, kube, count=cold)
            await bare_writes(plane, kube, count=cold)
    finally:
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--cold", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="services created per second")
    args = parser.parse_args()
    say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with ControlPlane(binaries=ensure_binaries()) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all")
        plane.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac" / "loader-clusterrole.yaml"))
        with operator_process(plane):  # installs the engines and reconciles the Model
            ready_model(plane, NAMESPACE)
        plane.kubectl("create", "namespace", COLD_NAMESPACE)
        asyncio.run(main_async(plane, services=args.services, cold=args.cold, rate=args.rate))
    say(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine distorts figures)")


if __name__ == "__main__":
    main()
