"""Start and stop a local control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with fake GPU nodes, all on free loopback ports."""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from aima_testenv import host, nodes, pki, processes
from aima_testenv.binaries import Binaries
from aima_testenv.realnode import RealNode, build_images

_START_TIMEOUT_SECONDS = 120.0
_START_ATTEMPTS = 3
_PROCESS_NAMES = {
    "controller-manager": "kube-controller-manager",
    "scheduler": "kube-scheduler",
    "kwok": "kwok",
}
# Upstream stages that make kwok behave like kubelets: nodes Ready with leases, pods Running and
# Ready, Job pods Succeeded, deleted pods gone, and the opt-in chaos stages.
_UPSTREAM_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "node/chaos/node-not-ready.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
    "volume/fast/pvc-provision.yaml",
    "volume/fast/pv-bind.yaml",
    "volume/fast/pv-delete.yaml",
    "volume/fast/pvc-delete.yaml",
)
# The default StorageClass whose claims kwok's volume stages provision and bind.
_STORAGE_CLASS = "volume/fast/storage-class.yaml"
# Only writes are audited: enough to count what a controller changes, small enough to read.
_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message names the component and ends with its log."""


class Profile(enum.StrEnum):
    """How much of a cluster to run."""

    API = "api"
    """etcd and kube-apiserver only: schemas, RBAC, watches; no pods ever run."""
    FULL = "full"
    """Everything: controllers, scheduler, kwok nodes; Deployments get Running, Ready pods."""


class ControlPlane:
    """A local control plane; use it as a context manager so it always stops.

    ``stop()`` kills every component's process group, so no process and no port stays behind,
    also when the block raised.
    """

    def __init__(
        self,
        *,
        binaries: Binaries,
        profile: Profile = Profile.FULL,
        workdir: Path | None = None,
        node_specs: Sequence[nodes.NodeSpec] = nodes.DEFAULT_NODES,
        real_node: bool = False,
    ) -> None:
        self.binaries = binaries
        self.profile = profile
        self.node_specs = tuple(node_specs)
        self.real_node: RealNode | None = None
        self._wants_real_node = real_node
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="aima-testenv-", dir=_fast_tmp()))
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.components: list[processes.Component] = []
        self.ports: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and wait until the cluster is usable; stop everything on failure."""
        try:
            self._pki = pki.generate(self.workdir / "pki")
            self._start_core_with_fresh_ports()
            if self.profile is Profile.FULL:
                self._start_nodes_side()
            if self._wants_real_node:
                self.real_node = RealNode(self, build_images(self.binaries)).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the real node, then the components in reverse order, and remove the work folder if we
        made it."""
        self.stop_real_node()
        for component in reversed(self.components):
            component.stop()
        self.components.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_real_node(self) -> None:
        """Stop the real node, if one runs, leaving the host as it was; the control plane stays."""
        if self.real_node is not None:
            self.real_node.stop()
            self.real_node = None

    @contextlib.contextmanager
    def outage(self, name: str, *, crash: bool = False) -> Iterator[None]:
        """``name`` (``etcd`` or ``kube-apiserver``) is down while the block runs, then starts again
        on the same ports and data; the block ends when the API server is ready again.

        With ``crash`` it is killed (SIGKILL, as an OOM kill or a lost node does), not shut down: its
        clients' connections break off mid-stream instead of being closed.
        """
        component = next(c for c in self.components if c.name == name)
        if crash and component.pid is not None:
            processes.kill(component.pid)
        component.stop()
        try:
            yield
        finally:
            component.start()
            if name == "etcd":
                self._wait(component, f"http://127.0.0.1:{self.ports['etcd']}/health")
            apiserver = next(c for c in self.components if c.name == "kube-apiserver")
            context = ssl.create_default_context(cafile=str(self._pki.ca_cert))
            self._wait(apiserver, f"{self.server}/readyz", context=context)

    @property
    def pki(self) -> pki.Pki:
        """The control plane's certificates and keys."""
        return self._pki

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure (with ``check``) raise with its stderr.

        ``timeout`` bounds the process; a ``kubectl wait`` passes one longer than its own.
        """
        argv = [str(self.binaries.path("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifests: Sequence[dict[str, Any]]) -> None:
        """``kubectl apply`` a list of objects."""
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))

    def service_account_kubeconfig(self, *, namespace: str, name: str) -> Path:
        """A kubeconfig that acts as a ServiceAccount (a token minted now), to test RBAC for real."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": "aima-admin", "user": {"token": token}}]
        path = self.workdir / f"kubeconfig-{namespace}-{name}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- start-up steps ----------------------------------------------------------------------

    def _start_core_with_fresh_ports(self) -> None:
        # Between picking a free port and binding it another process may take it: then pick again.
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.ports = {name: processes.free_port() for name in ("etcd", "etcd-peer", "apiserver")}
            try:
                self._start_etcd()
                self._start_apiserver()
                return
            except ControlPlaneError as error:
                for component in reversed(self.components):
                    component.stop()
                self.components.clear()
                if "address already in use" not in str(error) or attempt == _START_ATTEMPTS:
                    raise

    def _launch(self, name: str, argv: list[str]) -> processes.Component:
        (self.workdir / "logs").mkdir(exist_ok=True)
        component = processes.Component(name=name, argv=argv, log_path=self.workdir / "logs" / f"{name}.log")
        component.start()
        self.components.append(component)
        return component

    def _wait(
        self, component: processes.Component, url: str, *, context: ssl.SSLContext | None = None
    ) -> None:
        try:
            component.wait_healthy(url, timeout=_START_TIMEOUT_SECONDS, ssl_context=context)
        except processes.ProcessError as error:
            raise ControlPlaneError(str(error)) from error

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        data_dir = self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        etcd = self._launch(
            "etcd",
            [
                str(self.binaries.path("etcd")),
                "--name=node0",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=node0={peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync=true",
                "--auto-compaction-retention=1",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, f"{client}/health")

    def _start_apiserver(self) -> None:
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(_AUDIT_POLICY))
        keys = self._pki
        apiserver = self._launch(
            "kube-apiserver",
            [
                str(self.binaries.path("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                *self._apiserver_addresses(),
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={keys.serving_cert}",
                f"--tls-private-key-file={keys.serving_key}",
                f"--client-ca-file={keys.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={keys.service_account_pub}",
                f"--service-account-signing-key-file={keys.service_account_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--v=1",
                *(
                    ["--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"]
                    if self.profile is Profile.API
                    else []
                ),
            ],
        )
        self.write_kubeconfig(self.kubeconfig, cert=self._pki.admin_cert, key=self._pki.admin_key)
        context = ssl.create_default_context(cafile=str(keys.ca_cert))
        self._wait(apiserver, f"{self.server}/readyz", context=context)

    def _apiserver_addresses(self) -> list[str]:
        if not self._wants_real_node:
            return ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
        # Pods reach `kubernetes` (10.96.0.1) DNAT'ed to the advertised address, which loopback is
        # not from inside a pod; the kubelet's webhook authn wants a client certificate of ours.
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={host.host_address()}",
            f"--kubelet-client-certificate={self._pki.admin_cert}",
            f"--kubelet-client-key={self._pki.admin_key}",
            # The host's DNS knows no node names: logs and exec go to the node's address.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _start_nodes_side(self) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the components serve health with self-signed certs
        self.ports |= {name: processes.free_port() for name in ("controller-manager", "scheduler", "kwok")}
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--v=1",
        ]
        argv_of: dict[str, Callable[[int], list[str]]] = {
            "controller-manager": lambda port: [
                str(self.binaries.path("kube-controller-manager")),
                *common,
                f"--secure-port={port}",
                f"--root-ca-file={self._pki.ca_cert}",
                f"--service-account-private-key-file={self._pki.service_account_key}",
                "--node-monitor-period=2s",
                "--node-monitor-grace-period=40s",
            ],
            "scheduler": lambda port: [
                str(self.binaries.path("kube-scheduler")),
                *common,
                f"--secure-port={port}",
            ],
            "kwok": lambda port: [
                str(self.binaries.path("kwok")),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self._write_kwok_config()}",
                f"--manage-nodes-with-label-selector={nodes.KWOK_SELECTOR}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{port}",
            ],
        }
        health_of: dict[str, Callable[[int], str]] = {
            "controller-manager": lambda port: f"https://127.0.0.1:{port}/healthz",
            "scheduler": lambda port: f"https://127.0.0.1:{port}/healthz",
            "kwok": lambda port: f"http://127.0.0.1:{port}/healthz",
        }
        contexts = {"controller-manager": insecure, "scheduler": insecure, "kwok": None}
        # Started together, then waited for one by one: the three start-ups overlap.
        launched = {
            name: self._launch(_PROCESS_NAMES[name], argv(self.ports[name])) for name, argv in argv_of.items()
        }
        for name, component in launched.items():
            self._wait_or_relaunch(
                name, component, argv_of=argv_of[name], health_of=health_of[name], context=contexts[name]
            )
        storage_class = yaml.safe_load((self.binaries.kwok_stages / _STORAGE_CLASS).read_text())
        if self._wants_real_node:
            # Claims go to the real node's local-path class; kwok's stays for those that name it.
            storage_class["metadata"]["annotations"] = {}
        self.apply([*(nodes.node_manifest(spec) for spec in self.node_specs), storage_class])
        self._wait_nodes_schedulable()
        self._wait_for(
            "the default ServiceAccount",
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
        )

    def _wait_or_relaunch(
        self,
        name: str,
        component: processes.Component,
        *,
        argv_of: Callable[[int], list[str]],
        health_of: Callable[[int], str],
        context: ssl.SSLContext | None,
    ) -> None:
        """Wait for ``component`` to be healthy; if another process took its port between picking and
        binding it (an outgoing connection may get it as its source port), start it on a fresh one."""
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._wait(component, health_of(self.ports[name]), context=context)
                return
            except ControlPlaneError as error:
                if "address already in use" not in str(error) or attempt == _START_ATTEMPTS:
                    raise
            component.stop()
            self.components.remove(component)
            self.ports[name] = processes.free_port()
            component = self._launch(_PROCESS_NAMES[name], argv_of(self.ports[name]))

    def _wait_nodes_schedulable(self) -> None:
        def schedulable() -> bool:
            listing = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
            ready = [n for n in listing["items"] if _node_ready(n) and not _not_ready_taint(n)]
            return len(ready) == len(self.node_specs)

        self._wait_for("the kwok nodes to be Ready and untainted", schedulable)

    def _wait_for(self, what: str, check: Callable[[], bool]) -> None:
        try:
            processes.wait_until(what, check, components=self.components, timeout=_START_TIMEOUT_SECONDS)
        except processes.ProcessError as error:
            raise ControlPlaneError(str(error)) from error

    # -- generated files -----------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, *, cert: Path, key: Path) -> Path:
        """A kubeconfig for this cluster that authenticates with a client certificate."""

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "aima-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(self._pki.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "aima-admin",
                    "user": {
                        "client-certificate-data": b64(cert),
                        "client-key-data": b64(key),
                    },
                }
            ],
            "contexts": [{"name": "aima-local", "context": {"cluster": "aima-local", "user": "aima-admin"}}],
            "current-context": "aima-local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _write_kwok_config(self) -> Path:
        documents: list[dict[str, Any]] = [
            {
                "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                "kind": "KwokConfiguration",
                "options": {
                    "manageNodesWithLabelSelector": nodes.KWOK_SELECTOR,
                    "cidr": "10.244.0.0/16",
                    "nodeIP": "10.0.0.1",
                    "nodeLeaseDurationSeconds": 40,
                    # kwok applies its defaults only without a config file, so spell them out.
                    "podPlayStageParallelism": 4,
                    "nodePlayStageParallelism": 4,
                    "nodeLeaseParallelism": 4,
                    "podsOnNodeSyncParallelism": 1,
                },
            }
        ]
        for relative in _UPSTREAM_STAGES:
            documents += list(yaml.safe_load_all((self.binaries.kwok_stages / relative).read_text()))
        ours = resources.files("aima_testenv").joinpath("stages.yaml").read_text()
        documents += list(yaml.safe_load_all(ours))
        path = self.workdir / "kwok.yaml"
        path.write_text(yaml.safe_dump_all([d for d in documents if d]))
        return path


def _fast_tmp() -> str | None:
    """tmpfs when there is one: etcd and the logs then never wait on a disk."""
    shm = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private 0700 folder inside it)
    with contextlib.suppress(OSError):
        if shm.is_dir() and shutil.disk_usage(shm).free > 2 * 1024**3:
            return str(shm)
    return None


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _not_ready_taint(node: dict[str, Any]) -> bool:
    taints = node.get("spec", {}).get("taints") or []
    return any(t["key"].startswith("node.kubernetes.io/") for t in taints)
