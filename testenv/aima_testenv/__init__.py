"""A real local Kubernetes control plane for tests and for `aima dev`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as host processes on
loopback; kwok stands in for kubelets on fake GPU and CPU nodes. With ``real_node=True`` a real
kubelet node joins beside them (containerd, runc, CNI, CoreDNS, local-path volumes), running the
images built with no registry (``aima_testenv.realnode``). Development tooling only: the operator
itself never imports this package.
"""

from aima_testenv import host, nodes
from aima_testenv.binaries import Binaries, ensure_binaries
from aima_testenv.cluster import ControlPlane, ControlPlaneError, Profile

__all__ = ["Binaries", "ControlPlane", "ControlPlaneError", "Profile", "ensure_binaries", "host", "nodes"]
