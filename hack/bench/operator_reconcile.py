"""Operator benchmark (not a test): apply -> Deployment -> Ready latency, and a cold start at scale.

Runs a local control plane (kwok makes pods Ready at once) and the operator as its own process
(`aima operator run`), and measures against floors taken in the same run on the same machine:

- latency: the API server's own create-to-watch-event time for a Deployment posted directly;
- cold start: the same writes the operator must make for every service (server-side apply of its
  Deployment and Service, one status patch), rendered by the same planning code and sent by a bare
  client with the operator's concurrency, no watches, no reads. The control plane's CPU seconds
  are printed for both, since on a small machine it, not the operator, may set the pace.

    .venv/bin/python hack/bench/operator_reconcile.py --services 200 --cold 1000

Targets (issue 5): p50 apply->Deployment under 100 ms; 1,000 services settled from a cold start
in under 60 s; operator peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aima.domain import inference_service as planning
from aima.kube import KubeClient, connect, resources
from aima.kube.cache import WatchedList
from aima.testenv import ControlPlane, ensure_binaries

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
COLD_NAMESPACE = "bench-cold"
FLOOR_NAMESPACE = "bench-floor"
CONCURRENCY = 16  # the operator's workers per kind, and the bench's creators
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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


async def create_many(kube: KubeClient, namespace: str, *, count: int, prefix: str) -> list[Body]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Body:
        async with semaphore:
            return await kube.create(service(f"{prefix}-{i:04d}", namespace, replicas=0))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def until_settled(kube: KubeClient, *, count: int, timeout: float) -> int:
    """Wait (by watching, not by polling lists) until ``count`` services have a status for their
    generation and a Deployment; return how many did."""
    with_status: set[str] = set()
    with_deployment: set[str] = set()
    done = asyncio.Event()

    def seen(into: set[str], test: Callable[[Body], bool]) -> Callable[[Body], None]:
        def handler(obj: Body) -> None:
            if test(obj):
                into.add(obj["metadata"]["name"])
            if len(with_status & with_deployment) >= count:
                done.set()

        return handler

    services = WatchedList(kube, resources.INFERENCE_SERVICES, namespaces=[COLD_NAMESPACE])
    deployments = WatchedList(kube, resources.DEPLOYMENTS, namespaces=[COLD_NAMESPACE])
    services.subscribe(
        seen(
            with_status,
            lambda o: o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"],
        )
    )
    deployments.subscribe(seen(with_deployment, lambda o: True))
    await asyncio.gather(services.start(), deployments.start())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        await asyncio.gather(services.stop(), deployments.stop())
    return len(with_status & with_deployment)


async def cold_start(plane: ControlPlane, kube: KubeClient, *, count: int) -> None:
    await create_many(kube, COLD_NAMESPACE, count=count, prefix="cold")
    pids = plane_pids(plane)
    started = time.perf_counter()
    operator = start_operator(plane)
    try:
        with cpu_used(pids | {"operator": operator.pid}) as used:
            done = await until_settled(kube, count=count, timeout=300)
            elapsed = time.perf_counter() - started
            rss = peak_rss_mib(operator.pid)
    finally:
        stop(operator)
    say(
        f"cold start: {done} of {count} services settled in {elapsed:.1f} s (process start included); "
        f"operator peak RSS {rss:.0f} MiB"
    )
    report_cpu("cold start", used, seconds=elapsed)


async def bare_writes(plane: ControlPlane, kube: KubeClient, *, count: int) -> None:
    """The floor of the cold start: the operator's writes for ``count`` services sent by a bare client.

    Children and status are rendered beforehand by the operator's own planning code; what is timed
    is only the API server (and the controller-manager, reacting to the Deployments as it does in
    the real run) accepting them.
    """
    plane.kubectl("create", "namespace", FLOOR_NAMESPACE)
    model = await kube.get(resources.MODELS, name="tiny", namespace=COLD_NAMESPACE)
    assert model is not None
    model["metadata"]["namespace"] = FLOOR_NAMESPACE
    observed = planning.Observed(
        model=model, engines=await kube.list(resources.ENGINES), nodes=await kube.list(resources.NODES)
    )
    bodies = await create_many(kube, FLOOR_NAMESPACE, count=count, prefix="floor")
    work = []
    for body in bodies:
        plan = planning.plan(body, observed=observed)
        status = planning.compute_status(
            body, plan=plan, observed=observed, now=datetime.datetime.now(datetime.UTC)
        )
        work.append((plan.objects, body, status.model_dump(mode="json", by_alias=True, exclude_none=True)))
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(children: list[Body], body: Body, status: Body) -> None:
        async with semaphore:
            await asyncio.gather(*(kube.apply(child) for child in children))
            name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
            await kube.patch_status(
                resources.INFERENCE_SERVICES, name=name, namespace=namespace, status=status
            )

    started = time.perf_counter()
    with cpu_used(plane_pids(plane)) as used:
        await asyncio.gather(*(one(*item) for item in work))
        elapsed = time.perf_counter() - started
    writes = sum(len(children) + 1 for children, _, _ in work)
    say(
        f"cold-start floor: the same {writes} writes for {count} services from a bare client "
        f"({CONCURRENCY} at a time) took {elapsed:.1f} s"
    )
    report_cpu("floor", used, seconds=elapsed)


# ---- the operator process --------------------------------------------------------------------------


def start_operator(plane: ControlPlane) -> subprocess.Popen[bytes]:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "AIMA_CATALOG_DIR": str(ROOT / "catalog")}
    log = (plane.workdir / "logs" / "operator.log").open("ab")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "aima"), "operator", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    process.kill()


async def main_async(plane: ControlPlane, *, services: int, cold: int, rate: float) -> None:
    kube = await connect(kubeconfig=plane.kubeconfig)
    try:
        if services:
            operator = start_operator(plane)
            try:
                await asyncio.sleep(5)
                report_latency(await latency(kube, count=services, rate=rate), count=services)
                say(f"  operator peak RSS {peak_rss_mib(operator.pid):.0f} MiB")
            finally:
                stop(operator)
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
        operator = start_operator(plane)  # installs the engines and reconciles the Models
        try:
            ready_model(plane, NAMESPACE)
            ready_model(plane, COLD_NAMESPACE)
        finally:
            stop(operator)
        asyncio.run(main_async(plane, services=args.services, cold=args.cold, rate=args.rate))
    say(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine distorts figures)")


if __name__ == "__main__":
    main()
