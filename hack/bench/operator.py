"""Operator benchmark (not a test): apply -> Deployment -> Ready latency, and a cold start at scale.

Runs a local control plane (kwok makes pods Ready at once), the operator as its own process
(`aima operator run`), and measures against a baseline taken in the same run: the API server's own
create-to-watch-event time for a Deployment posted directly, the floor any controller stands on.

    .venv/bin/python hack/bench/operator.py --services 200 --cold 1000

Targets (issue 5): p50 apply->Deployment under 100 ms; 1,000 services settled from a cold start
in under 60 s; operator peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aima.kube import KubeClient, connect, resources
from aima.testenv import ControlPlane, ensure_binaries

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
COLD_NAMESPACE = "bench-cold"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def service(name: str, namespace: str, *, replicas: int) -> dict[str, Any]:
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


async def watch_times(
    kube: KubeClient, resource: resources.Resource, namespace: str, *, ready: bool, seen: dict[str, float]
) -> None:
    """Record when each object first appears (or, with ``ready``, first reports Ready=True)."""
    async for event in kube.watch(resource, namespace=namespace):
        obj = event["object"]
        name = obj["metadata"]["name"]
        if name in seen:
            continue
        conditions = obj.get("status", {}).get("conditions", [])
        if not ready or any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            seen[name] = time.perf_counter()


async def latency(kube: KubeClient, *, count: int, rate: float) -> dict[str, list[float]]:
    """Create ``count`` services at ``rate`` per second; also time direct Deployment creates."""
    created: dict[str, float] = {}
    deployments: dict[str, float] = {}
    ready: dict[str, float] = {}
    watchers = [
        asyncio.create_task(
            watch_times(kube, resources.DEPLOYMENTS, NAMESPACE, ready=False, seen=deployments)
        ),
        asyncio.create_task(
            watch_times(kube, resources.INFERENCE_SERVICES, NAMESPACE, ready=True, seen=ready)
        ),
    ]
    await asyncio.sleep(1)
    for i in range(count):
        name = f"svc-{i:04d}"
        created[name] = time.perf_counter()
        await kube.create(service(name, NAMESPACE, replicas=1))
        floor = f"floor-{i:04d}"
        created[floor] = time.perf_counter()
        await kube.create(baseline_deployment(floor))
        await asyncio.sleep(1 / rate)
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
        "ready": [ready[n] - created[n] for n in created if n in ready],
    }


def baseline_deployment(name: str) -> dict[str, Any]:
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


async def create_many(kube: KubeClient, *, count: int) -> None:
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with semaphore:
            await kube.create(service(f"cold-{i:04d}", COLD_NAMESPACE, replicas=0))

    await asyncio.gather(*(one(i) for i in range(count)))


async def settled(kube: KubeClient, *, count: int) -> int:
    """Services whose status the operator computed for their current generation, with a Deployment."""
    services = await kube.list(resources.INFERENCE_SERVICES, namespace=COLD_NAMESPACE)
    names = {d["metadata"]["name"] for d in await kube.list(resources.DEPLOYMENTS, namespace=COLD_NAMESPACE)}
    return sum(
        1
        for s in services
        if s.get("status", {}).get("observedGeneration") == s["metadata"]["generation"]
        and s["metadata"]["name"] in names
    )


def start_operator(plane: ControlPlane) -> subprocess.Popen[bytes]:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "AIMA_CATALOG_DIR": str(ROOT / "catalog")}
    log = (plane.workdir / "logs" / "operator.log").open("ab")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "aima"), "operator", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    process.kill()


def report_latency(found: dict[str, list[float]], *, count: int) -> None:
    floor = percentile([v * 1000 for v in found["floor"]], 0.5)
    print(f"apply -> Deployment, {count} services at a fixed rate (ms):")
    for key in ("floor", "deployment", "ready"):
        values = [v * 1000 for v in found[key]]
        label = {
            "floor": "API floor (direct Deployment)",
            "deployment": "operator: Deployment created",
            "ready": "operator: status Ready",
        }[key]
        print(
            f"  {label:34s} n={len(values):4d}  p50 {percentile(values, 0.5):7.1f}  p99 "
            f"{percentile(values, 0.99):7.1f}  p50/floor {percentile(values, 0.5) / floor:5.1f}x"
        )


async def main_async(plane: ControlPlane, *, services: int, cold: int, rate: float) -> None:
    kube = await connect(kubeconfig=plane.kubeconfig)
    try:
        operator = start_operator(plane)
        try:
            await asyncio.sleep(5)
            report_latency(await latency(kube, count=services, rate=rate), count=services)
        finally:
            stop(operator)
        await create_many(kube, count=cold)
        started = time.perf_counter()
        operator = start_operator(plane)
        try:
            while (done := await settled(kube, count=cold)) < cold and time.perf_counter() - started < 300:
                await asyncio.sleep(1)
            elapsed = time.perf_counter() - started
            rss = peak_rss_mib(operator.pid)
        finally:
            stop(operator)
        print(
            f"cold start: {done} of {cold} services settled in {elapsed:.1f} s (process start included); "
            f"operator peak RSS {rss:.0f} MiB"
        )
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
    with ControlPlane(binaries=ensure_binaries()) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all")
        plane.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac"))
        operator = start_operator(plane)  # installs the engines and reconciles the Models
        try:
            ready_model(plane, NAMESPACE)
            ready_model(plane, COLD_NAMESPACE)
        finally:
            stop(operator)
        asyncio.run(main_async(plane, services=args.services, cold=args.cold, rate=args.rate))


if __name__ == "__main__":
    main()
