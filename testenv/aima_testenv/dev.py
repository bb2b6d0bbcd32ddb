"""`aima dev`: a local control plane with fake GPU nodes for trying AIMA without a cluster.

A plugin of the `aima` CLI (the entry point ``aima.cli: dev`` of this project), so that the shipped
package, and with it the image, holds nothing of the test control plane.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console

from aima.api.engine import Accelerator, Architecture
from aima.catalog import load_catalog
from aima.settings import Settings
from aima_testenv import ControlPlane, ensure_binaries, nodes
from aima_testenv.binaries import REPO_ROOT, Binaries
from aima_testenv.chart import install
from aima_testenv.gateway import LocalGateway
from aima_testenv.loader_jobs import LocalLoaderJobs
from aima_testenv.models import write_tiny_llama_gguf
from aima_testenv.operator import OperatorThread
from aima_testenv.processes import interrupt_on_sigterm
from aima_testenv.realnode import NODE_LABEL

_SAMPLE_TIMEOUT_SECONDS = 90
_PLATFORM_NAMESPACE = "aima-system"


_kubeconfig_out = click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".aima/kubeconfig"),
    show_default=True,
    help="Where to copy the cluster's kubeconfig.",
)


@click.group()
def dev() -> None:
    """Development helpers: a local cluster from this checkout (the development install)."""


@dev.command()
@_kubeconfig_out
@click.option(
    "--gateway-port", default=8080, show_default=True, type=int, help="Port of the gateway on 127.0.0.1."
)
@click.option(
    "--kwok-only",
    is_flag=True,
    help="Only kwok's fake nodes: no root, no images, up in about a minute; replicas are local fakes.",
)
def up(kubeconfig_out: Path, gateway_port: int, kwok_only: bool) -> None:
    """Start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok
    with two fake 8-GPU nodes) with a real node (needs root): the chart installed from the image built
    here, and a sample service whose tiny model llama.cpp serves on the node's CPU, behind the
    gateway on 127.0.0.1; until Ctrl-C. With --kwok-only, the operator and the gateway run in this
    process and the sample is served by a fake engine on a fake H100."""
    console = Console(stderr=True)
    interrupt_on_sigterm()
    with console.status("Building or finding the control plane binaries"):
        binaries = ensure_binaries()
    if kwok_only:
        _up_kwok_only(console, binaries, kubeconfig_out=kubeconfig_out, gateway_port=gateway_port)
    else:
        _up_real_node(console, binaries, kubeconfig_out=kubeconfig_out, gateway_port=gateway_port)


def _up_kwok_only(console: Console, binaries: Binaries, *, kubeconfig_out: Path, gateway_port: int) -> None:
    plane = ControlPlane(binaries=binaries)
    try:
        with console.status("Starting etcd, kube-apiserver, controllers, scheduler and kwok nodes"):
            plane.start()
        with console.status("Installing the CRDs and RBAC"):
            _install(plane, repo_root=REPO_ROOT)
        _copy_kubeconfig(plane, kubeconfig_out)
        settings = Settings(kubeconfig=plane.kubeconfig, catalog_dir=REPO_ROOT / "catalog")
        volumes = plane.workdir / "volumes"
        with OperatorThread(settings), LocalLoaderJobs(plane, volumes=volumes):
            with console.status("Applying hack/dev-sample.yaml and waiting for it to be Ready"):
                ready = _apply_sample(plane, sample=REPO_ROOT / "hack" / "dev-sample.yaml", volumes=volumes)
            _say_whether_ready(console, plane, ready=ready, where="on a fake H100 node")
            _serve_gateway(console, plane, settings, port=gateway_port, kubeconfig=kubeconfig_out.resolve())
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping the control plane")
        plane.stop()


def _up_real_node(console: Console, binaries: Binaries, *, kubeconfig_out: Path, gateway_port: int) -> None:
    plane = ControlPlane(binaries=binaries, node_specs=nodes.GPU_NODES, real_node=True)
    try:
        with console.status("Starting the control plane and the real node (the first start builds images)"):
            plane.start()
        node = plane.real_node
        assert node is not None
        # The catalog's llama.cpp image for CPUs is, on this node, the llama-server built here.
        node.tag_image(node.images["llama-server"], _catalog_image(REPO_ROOT / "catalog", "llama-cpp"))
        with console.status("helm install charts/aima into aima-system"):
            release = install(
                plane,
                image=node.images["aima"],
                namespace=_PLATFORM_NAMESPACE,
                values={"gateway": {"namespace": "default"}},
            )
        _copy_kubeconfig(plane, kubeconfig_out)
        with console.status("Applying hack/dev-sample-real-node.yaml and waiting for it to be Ready"):
            ready = _apply_real_node_sample(plane, sample=REPO_ROOT / "hack" / "dev-sample-real-node.yaml")
        _say_whether_ready(console, plane, ready=ready, where="on the real node, served by llama.cpp")
        api_key = _create_api_key(plane)
        with _port_forward(plane, f"svc/{release.name('gateway')}", port=gateway_port) as gateway:
            _print_next_steps(
                console,
                kubeconfig=kubeconfig_out.resolve(),
                kubectl=binaries.path("kubectl"),
                gateway=gateway,
                api_key=api_key,
                replicas="the chart's pods and llama.cpp run in real containers on the node `real-node`",
            )
            _wait_for_ctrl_c()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping the real node and the control plane; the host is left as it was")
        plane.stop()


@dev.command()
@_kubeconfig_out
def node(kubeconfig_out: Path) -> None:
    """Start the local control plane with the two kwok GPU nodes and one real node (a kubelet,
    containerd, CNI, CoreDNS and local-path volumes on this host; needs root), build the image with no
    registry and `helm install` the chart into aima-system, until Ctrl-C. What the real-node tests
    run on; the first start builds the images (a few minutes), later ones take about a minute."""
    console = Console(stderr=True)
    interrupt_on_sigterm()
    with console.status("Building or finding the control plane and node binaries"):
        binaries = ensure_binaries()
    plane = ControlPlane(binaries=binaries, node_specs=nodes.GPU_NODES, real_node=True)
    try:
        with console.status("Starting the control plane, the real node and its images"):
            plane.start()
        assert plane.real_node is not None
        with console.status("helm install charts/aima (Restricted namespace aima-system)"):
            release = install(
                plane, image=plane.real_node.images["aima"], namespace=_PLATFORM_NAMESPACE, values={}
            )
        _copy_kubeconfig(plane, kubeconfig_out)
        console.print(
            "[bold green]A real node runs the chart[/] "
            f"(helm install --wait took {release.install_seconds:.0f} s).\n"
            f"  export KUBECONFIG={kubeconfig_out.resolve()} PATH={binaries.bin_dir}:$PATH\n"
            f"  kubectl get pods -A -o wide\n"
            f"Press Ctrl-C here to stop it; the host is left as it was.",
            soft_wrap=True,
        )
        _wait_for_ctrl_c()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping the real node and the control plane")
        plane.stop()


def _install(plane: ControlPlane, *, repo_root: Path) -> None:
    plane.kubectl("apply", "--server-side", "--field-manager=aima-dev", "-f", str(repo_root / "crds"))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-l", "app.kubernetes.io/part-of=aima", "crd"
    )
    # Only the loader's role: the operator and the gateway run here with the admin kubeconfig.
    plane.kubectl("apply", "-f", str(repo_root / "manifests" / "rbac" / "loader-clusterrole.yaml"))


def _apply_sample(plane: ControlPlane, *, sample: Path, volumes: Path) -> bool:
    # The sample's volume already holds (placeholder) weights, as a pre-seeded PVC would.
    weights = volumes / "default" / "shared-weights" / "tiny-chat"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2}')
    (weights / "model.safetensors").write_bytes(os.urandom(2**20))
    plane.kubectl("apply", "-n", "default", "-f", str(sample))
    return _wait_ready(plane, timeout=_SAMPLE_TIMEOUT_SECONDS)


def _wait_ready(plane: ControlPlane, *, timeout: int) -> bool:
    waited = plane.kubectl(
        "wait",
        "-n",
        "default",
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        "inferenceservice/tiny-chat",
        check=False,
        timeout=timeout + 30,
    )
    return waited.returncode == 0


def _say_whether_ready(console: Console, plane: ControlPlane, *, ready: bool, where: str) -> None:
    if ready:
        console.print(
            f"[bold green]The sample InferenceService tiny-chat is Ready[/] {where}.", soft_wrap=True
        )
    else:
        console.print(f"[bold red]The sample tiny-chat is not Ready:[/] {_why_not_ready(plane)}")


def _copy_kubeconfig(plane: ControlPlane, kubeconfig_out: Path) -> None:
    kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plane.kubeconfig, kubeconfig_out)


def _apply_real_node_sample(plane: ControlPlane, *, sample: Path) -> bool:
    """The sample's weights on a host folder, offered as the PersistentVolume its claim names (as an
    admin offers weights copied onto a node), then the sample; whether it became Ready in time."""
    folder = plane.workdir / "dev-weights"
    write_tiny_llama_gguf(folder / "tiny-chat" / "tiny.gguf")
    # The loader's Job runs as 65532 and records a manifest beside the weights it verifies.
    for path in (folder, folder / "tiny-chat", folder / "tiny-chat" / "tiny.gguf"):
        os.chown(path, 65532, 65532)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "dev-weights"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": NODE_LABEL, "operator": "In", "values": ["true"]}]}
                    ]
                }
            },
        },
    }
    plane.apply([volume])
    plane.kubectl("apply", "-n", "default", "-f", str(sample))
    return _wait_ready(plane, timeout=_SAMPLE_TIMEOUT_SECONDS * 2)


def _catalog_image(catalog: Path, engine: str) -> str:
    """The image of ``engine``'s CPU variant for amd64 in the catalog."""
    (found,) = [e for e in load_catalog(catalog).engines if e.metadata.name == engine]
    return next(
        v.image
        for v in found.spec.variants
        if v.accelerator == Accelerator.CPU and v.architecture == Architecture.AMD64
    )


@contextlib.contextmanager
def _port_forward(plane: ControlPlane, target: str, *, port: int) -> Iterator[str]:
    """`kubectl port-forward` of ``target`` (a Service in the platform's namespace) to 127.0.0.1:``port``
    (0: a free one), for as long as the block runs; yields the URL."""
    remote = plane.kubectl("get", target, "-n", _PLATFORM_NAMESPACE, "-o", "jsonpath={.spec.ports[0].port}")
    argv = [
        str(plane.binaries.path("kubectl")),
        f"--kubeconfig={plane.kubeconfig}",
        "port-forward",
        "-n",
        _PLATFORM_NAMESPACE,
        "--address=127.0.0.1",
        target,
        f"{port or ''}:{remote.stdout.strip()}",
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as forward:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> ..."
        found = re.search(r"127\.0\.0\.1:(\d+)", first)
        if found is None:
            forward.kill()
            raise click.ClickException(f"kubectl port-forward {target} failed: {first.strip()}")
        try:
            yield f"http://127.0.0.1:{found.group(1)}"
        finally:
            forward.terminate()


def _serve_gateway(
    console: Console,
    plane: ControlPlane,
    settings: Settings,
    *,
    port: int,
    kubeconfig: Path,
) -> None:
    """Serve the gateway with a fresh API key, say what to try, and wait for Ctrl-C or SIGTERM."""
    api_key = _create_api_key(plane)
    with contextlib.ExitStack() as serving:
        try:
            gateway = serving.enter_context(LocalGateway(settings, port=port))
        except RuntimeError as error:
            raise click.ClickException(f"{error} (another port: --gateway-port)") from None
        _print_next_steps(
            console,
            kubeconfig=kubeconfig,
            kubectl=plane.binaries.path("kubectl"),
            gateway=gateway.url,
            api_key=api_key,
            replicas="its replicas are local fake engines: kwok runs no containers",
        )
        _wait_for_ctrl_c()


def _wait_for_ctrl_c() -> None:
    """Block until Ctrl-C or SIGTERM (:func:`interrupt_on_sigterm`) raises KeyboardInterrupt."""
    threading.Event().wait()


def _create_api_key(plane: ControlPlane) -> str:
    """A fresh gateway key for this dev cluster, in a Secret as a cluster admin would make one."""
    key = f"sk-dev-{secrets.token_hex(16)}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dev-api-key", "namespace": "default", "labels": {"aima.dev/api-key": "true"}},
        # The dev key may also use the units door (/api/v2), as an operator's console key would.
        "data": {
            "key": base64.b64encode(key.encode()).decode(),
            "units": base64.b64encode(b"write").decode(),
        },
    }
    plane.apply([secret])
    return key


def _why_not_ready(plane: ControlPlane) -> str:
    jsonpath = '{.status.conditions[?(@.type=="Ready")].message}'
    found = plane.kubectl(
        "get", "-n", "default", "isvc", "tiny-chat", "-o", f"jsonpath={jsonpath}", check=False
    )
    return found.stdout or found.stderr


def _print_next_steps(
    console: Console, *, kubeconfig: Path, kubectl: Path, gateway: str, api_key: str, replicas: str
) -> None:
    chat = '{"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}]}'
    console.print(
        f"[bold green]Local cluster is up[/] with the AIMA CRDs, the engine catalog, the operator and "
        f"the gateway on {gateway} ({replicas}).\n"
        f"In another shell:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={kubectl.parent}:$PATH\n"
        f"  export OPENAI_BASE_URL={gateway}/v1 OPENAI_API_KEY={api_key}\n"
        f"  export AIMA_GATEWAY_URL={gateway} AIMA_GATEWAY_API_KEY={api_key}  # for aima mcp serve\n"
        f"  kubectl get nodes -L nvidia.com/gpu.product\n"
        f"  kubectl get aima\n"
        f"  kubectl describe isvc tiny-chat\n"
        f'  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" '
        f"-H 'Content-Type: application/json' -d '{chat}'\n"
        f"An agent's MCP server for this cluster (inference_* tools reach the gateway above):\n"
        f"  aima mcp serve --gateway-url {gateway}\n"
        f"Press Ctrl-C here to stop it.",
        soft_wrap=True,  # commands must stay on one line to be copied
    )
