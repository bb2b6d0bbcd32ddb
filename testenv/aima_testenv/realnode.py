"""A real node joined to the local control plane, beside the kwok nodes: containerd with runc, a
kubelet and kube-proxy as host processes, a CNI bridge, and CoreDNS, the local-path provisioner and
a NetworkPolicy enforcer as pods, running the images ``hack/testenv/images.sh`` built with no registry.

Only one fits a machine (see ``aima_testenv.host``); ``stop()`` leaves the host as it found it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from aima_testenv import host, processes, system_pods
from aima_testenv.binaries import REPO_ROOT, Binaries, cache_root

if TYPE_CHECKING:
    from aima_testenv.cluster import ControlPlane

NODE_NAME = "real-node"
NODE_LABEL = "aima.dev/real-node"
"""Label of the real node (value "true"): workloads that must really run select it."""
BRIDGE = "aima0"
POD_CIDR = "10.222.0.0/24"
CLUSTER_DNS = "10.96.0.10"
_KUBELET_PORTS = (10250, 10248)
_IMAGES_SCRIPT = REPO_ROOT / "hack" / "testenv" / "images.sh"
_READY_TIMEOUT_SECONDS = 120.0
_RUNTIME_NAMESPACE = "k8s.io"
_CRI_STARTED = "Start streaming server"  # containerd 1.6 logs it just before its CRI serves
_DISK_HEADROOM_BYTES = 2 * 2**30


class RealNodeError(RuntimeError):
    """The real node could not start; the message names the part and ends with its log."""


@dataclass(frozen=True)
class Images:
    """The images images.sh built: references by name (aima, base, pause, coredns, ...) and archives."""

    references: dict[str, str]
    archives: dict[str, Path]

    def __getitem__(self, name: str) -> str:
        return self.references[name]


def build_images(binaries: Binaries) -> Images:
    """Build (or find in the cache) every image a real node and the chart need."""
    result = subprocess.run(
        ["bash", str(_IMAGES_SCRIPT), str(binaries.bin_dir)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise RealNodeError(
            f"{_IMAGES_SCRIPT} failed with exit code {result.returncode}; see its output above"
        )
    folder = Path(result.stdout.strip().splitlines()[-1])
    references: dict[str, str] = {}
    archives: dict[str, Path] = {}
    for line in (folder / "images").read_text().splitlines():
        name, reference, archive = line.split()
        references[name], archives[name] = reference, Path(archive)
    return Images(references=references, archives=archives)


class RealNode:
    """A kubelet node on this host for one control plane; a context manager that always cleans up."""

    def __init__(self, plane: ControlPlane, images: Images) -> None:
        self.plane = plane
        self.images = images
        self.folder = plane.workdir / "real-node"
        self.runtime_root = cache_root() / "containerd-v1"
        self.socket = Path("/run/aima-real-node/containerd.sock")
        self.address = host.host_address()
        self.components: list[processes.Component] = []
        self._lock: IO[str] | None = None
        self._before: host.Snapshot | None = None

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- start --------------------------------------------------------------------------------

    def start(self) -> RealNode:
        """Start containerd, load the images, join the kubelet and kube-proxy, then the system pods."""
        self._lock = host.take_lock()
        try:
            host.check_prerequisites(_KUBELET_PORTS)
            # A table a killed run left would pass for the new enforcer's and drop the new pods' packets.
            host.delete_nft_table(system_pods.ENFORCER_TABLE)
            self._before = host.snapshot()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._start_containerd()
            self._load_images()
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_for("the real node to be Ready", self._node_ready)
            self.plane.apply(system_pods.manifests(self.images, volumes=self.folder / "volumes"))
            self._wait_for("CoreDNS and the local-path provisioner to be Ready", self._system_pods_ready)
            self._wait_for_enforcer()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, name: str, argv: list[str]) -> processes.Component:
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        component = processes.Component(name=name, argv=argv, log_path=self.folder / "logs" / f"{name}.log")
        component.start()
        self.components.append(component)
        return component

    def _start_containerd(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        config = self.folder / "containerd.toml"
        config.write_text(self._containerd_config())
        cni = self.folder / "cni" / "net.d"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-aima.conflist").write_text(json.dumps(self._cni_config()))
        containerd = self._launch("containerd", ["containerd", f"--config={config}"])
        self._wait_for("containerd's socket", lambda: self._ctr("version", check=False).returncode == 0)
        # Its CRI service answers "server is not initialized yet" (and the kubelet exits) until it has
        # recovered its state, which it logs as done with this line; a large cached store takes a while.
        self._wait_for(
            "containerd's CRI service to finish starting",
            lambda: _CRI_STARTED in containerd.log_path.read_text(errors="replace"),
        )

    def _containerd_config(self) -> str:
        # containerd 1.6's format (Debian's); restrict_oom_score_adj because these hosts lack
        # CAP_SYS_RESOURCE, and runc because crun cannot run on hybrid cgroups.
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{self.runtime_root / "root"}"
state = "{self.socket.parent / "state"}"
[grpc]
  address = "{self.socket}"
[{cri}]
  sandbox_image = "{self.images["pause"]}"
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [{cri}.cni]
    bin_dir = "{host.CNI_BIN_DIR}"
    conf_dir = "{self.folder / "cni" / "net.d"}"
"""

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "aima",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.folder / "cni" / "ipam"),
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _ctr(
        self, *args: str, check: bool = True, stdin: IO[bytes] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", f"--address={self.socket}", "-n", _RUNTIME_NAMESPACE, *args]
        result = subprocess.run(
            argv, stdin=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _load_images(self) -> None:
        """Import the archives containerd does not have yet (its root is cached across runs) and drop
        the images of earlier inputs, which nothing runs again (containerd's collector then frees
        their layers: the vLLM image alone is 6.8 GB)."""
        present = set(self._ctr("images", "list", "-q").stdout.split())
        wanted = set(self.images.references.values())
        # Stale ones first: an old and a new vLLM image side by side would need 27 GB.
        if stale := sorted(r for r in present - wanted if r.startswith("localhost/")):
            self._ctr("images", "rm", "--sync", *stale)
        for name, reference in self.images.references.items():
            if reference in present:
                continue
            self._ensure_room_for(self.images.archives[name])
            with self.images.archives[name].open("rb") as archive:
                self._ctr("images", "import", "-", stdin=archive, timeout=900)
            present.add(reference)  # one image may serve several names (vLLM's holds infinity too)

    def _ensure_room_for(self, archive: Path) -> None:
        # An import holds the layers twice (content store and unpacked snapshot); failing here names
        # the cause, where containerd would fail halfway through a layer with ENOSPC.
        needed = 2 * archive.stat().st_size + _DISK_HEADROOM_BYTES
        free = shutil.disk_usage(self.runtime_root).free
        if free < needed:
            raise RealNodeError(
                f"importing {archive.name} needs {needed / 2**30:.1f} GiB free under {self.runtime_root}, "
                f"but only {free / 2**30:.1f} GiB is: free disk space (old test folders under /tmp, "
                f"stale archives in {archive.parent}) and run again"
            )

    def _start_kubelet(self) -> None:
        cert, key = self.plane.pki.client(
            self.folder / "pki", common_name=f"system:node:{NODE_NAME}", organization="system:nodes"
        )
        kubeconfig = self.plane.write_kubeconfig(self.folder / "kubelet.kubeconfig", cert=cert, key=key)
        config = self.folder / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config()))
        self._launch(
            "kubelet",
            [
                str(self.plane.binaries.path("kubelet")),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.folder / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.address}",
                f"--node-labels={NODE_LABEL}=true",
                "--v=1",
            ],
        )

    def _kubelet_config(self) -> dict[str, Any]:
        # cgroup v1 with cgroupfs (no systemd here); oomScoreAdj 0 and maxOpenFiles within what
        # these hosts allow; evictions that a nearly full test disk does not trigger.
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS],
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "maxOpenFiles": 20000,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "serializeImagePulls": False,
        }

    def _start_kube_proxy(self) -> None:
        config = self.folder / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": POD_CIDR,
                    "healthzBindAddress": "127.0.0.1:10256",
                    "metricsBindAddress": "127.0.0.1:10249",
                    # Leave the host's conntrack sysctls alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "iptables": {"localhostNodePorts": False},
                }
            )
        )
        self._launch(
            "kube-proxy", [str(self.plane.binaries.path("kube-proxy")), f"--config={config}", "--v=1"]
        )

    def _node_ready(self) -> bool:
        result = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _system_pods_ready(self) -> bool:
        for namespace, name in system_pods.DEPLOYMENTS:
            result = self.plane.kubectl(
                "get",
                "deployment",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.readyReplicas}",
                check=False,
            )
            if result.stdout.strip() != "1":
                return False
        return True

    def _wait_for_enforcer(self) -> None:
        """Wait until the NetworkPolicy enforcer's rules are in the host's nftables: until then every
        policy is only a stored object. A timeout ends with its pod's log."""
        rule = f"queue num {system_pods.ENFORCER_QUEUE}"
        try:
            self._wait_for(
                "the NetworkPolicy enforcer's nftables rules",
                lambda: rule in host.nft_table(system_pods.ENFORCER_TABLE),
            )
        except RealNodeError as error:
            logs = self.plane.kubectl(
                "logs",
                "-n",
                system_pods.DNS_NAMESPACE,
                f"daemonset/{system_pods.ENFORCER}",
                "--tail=30",
                check=False,
            )
            raise RealNodeError(f"{error}\n--- {system_pods.ENFORCER}\n{logs.stdout}{logs.stderr}") from error

    def _wait_for(self, what: str, check: Callable[[], bool]) -> None:
        try:
            processes.wait_until(what, check, components=self.components, timeout=_READY_TIMEOUT_SECONDS)
        except processes.ProcessError as error:
            raise RealNodeError(str(error)) from error

    def tag_image(self, source: str, target: str) -> None:
        """Give an image the node has a second name (a new tag makes Deployments roll)."""
        self._ctr("images", "tag", "--force", source, target)

    @property
    def host_before(self) -> host.Snapshot:
        """The host as it was before this node started."""
        assert self._before is not None, "the node is not running"
        return self._before

    def pids(self) -> list[int]:
        """Process ids of the node's programs and of every container shim on its socket."""
        own = [c.pid for c in self.components if c.pid is not None]
        return own + host.pids_mentioning(str(self.socket))

    # -- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Delete the pods (so CNI releases their networks), stop every process, then undo what is
        left on the host: mounts, namespaces, the bridge, chains, the enforcer's table, cgroups, sysctls."""
        if self._before is not None:
            self._tear_down(self._before)
            self._before = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _tear_down(self, before: host.Snapshot) -> None:
        # Teardown goes on whatever fails: a control plane already gone only means no pod to delete.
        with contextlib.suppress(Exception):
            # Its controller would start the enforcer's pod again as soon as it is deleted.
            self.plane.kubectl(
                "delete", "daemonset", system_pods.ENFORCER, "-n", system_pods.DNS_NAMESPACE, "--wait=false"
            )
            self._delete_pods()
        by_name = {c.name: c for c in self.components}
        if "kube-proxy" in by_name:
            by_name["kube-proxy"].stop()
            subprocess.run(
                [str(self.plane.binaries.path("kube-proxy")), "--cleanup"], capture_output=True, check=False
            )
        if "kubelet" in by_name:
            by_name["kubelet"].stop()
        with contextlib.suppress(Exception):
            self._remove_containers()
        if "containerd" in by_name:
            by_name["containerd"].stop()
        for pid in host.pids_mentioning(str(self.socket)):
            with contextlib.suppress(ProcessLookupError):
                processes.kill(pid)
        self.components.clear()
        host.restore(before, folders=[self.folder, self.runtime_root, self.socket.parent], bridge=BRIDGE)
        # The enforcer, stopped by SIGTERM, leaves its table (it cleans up only on SIGINT).
        host.delete_nft_table(system_pods.ENFORCER_TABLE)
        host.remove_cgroups("kubepods")

    def _delete_pods(self) -> None:
        """Delete every pod bound to this node and wait (bounded) until the kubelet has torn them down."""
        selector = f"spec.nodeName={NODE_NAME}"
        self.plane.kubectl(
            "delete", "pods", "-A", f"--field-selector={selector}", "--grace-period=1", "--wait=false"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = self.plane.kubectl(
                "get", "pods", "-A", f"--field-selector={selector}", "-o", "name", check=False
            )
            if listing.returncode != 0 or not listing.stdout.strip():
                return
            time.sleep(0.5)

    def _remove_containers(self) -> None:
        for task in self._ctr("tasks", "list", "-q", check=False).stdout.split():
            self._ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            self._ctr("tasks", "delete", "-f", task, check=False)
        for container in self._ctr("containers", "list", "-q", check=False).stdout.split():
            self._ctr("containers", "delete", container, check=False)
