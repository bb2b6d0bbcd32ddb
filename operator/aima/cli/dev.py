"""`aima dev`: a local control plane with fake GPU nodes for trying AIMA without a cluster."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from aima.settings import Settings

if TYPE_CHECKING:
    from aima.testenv import ControlPlane


@click.group()
def dev() -> None:
    """Development helpers (need the `dev` extra: pip install -e '.[dev]')."""


@dev.command()
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".aima/kubeconfig"),
    show_default=True,
    help="Where to copy the cluster's kubeconfig.",
)
def up(kubeconfig_out: Path) -> None:
    """Start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok
    with two 8-GPU nodes and one CPU node) and keep it running until Ctrl-C."""
    from aima.testenv import ControlPlane, ensure_binaries  # dev-only dependencies
    from aima.testenv.binaries import REPO_ROOT
    from aima.testenv.operator import OperatorThread

    console = Console(stderr=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with console.status("Building or finding the control plane binaries"):
        binaries = ensure_binaries()
    plane = ControlPlane(binaries=binaries)
    with console.status("Starting etcd, kube-apiserver, controllers, scheduler and kwok nodes"):
        plane.start()
    try:
        with console.status("Installing the CRDs and RBAC"):
            _install(plane, repo_root=REPO_ROOT)
        kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plane.kubeconfig, kubeconfig_out)
        with OperatorThread(Settings(kubeconfig=plane.kubeconfig, catalog_dir=REPO_ROOT / "catalog")):
            _print_next_steps(console, kubeconfig=kubeconfig_out.resolve(), kubectl=binaries.path("kubectl"))
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping the control plane")
        plane.stop()


def _install(plane: ControlPlane, *, repo_root: Path) -> None:
    plane.kubectl("apply", "--server-side", "--field-manager=aima-dev", "-f", str(repo_root / "crds"))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-l", "app.kubernetes.io/part-of=aima", "crd"
    )
    plane.kubectl("apply", "-f", str(repo_root / "manifests" / "rbac"))


def _print_next_steps(console: Console, *, kubeconfig: Path, kubectl: Path) -> None:
    console.print(
        f"[bold green]Local cluster is up[/] with the AIMA CRDs, the engine catalog and the operator.\n"
        f"In another shell:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export PATH={kubectl.parent}:$PATH\n"
        f"  kubectl get nodes -L nvidia.com/gpu.product\n"
        f"  kubectl get engines\n"
        f"  kubectl apply -f examples/service.yaml && kubectl get aima\n"
        f"Press Ctrl-C here to stop it."
    )
