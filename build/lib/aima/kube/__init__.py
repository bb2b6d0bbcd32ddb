"""The only package that talks to the Kubernetes API server."""

from aima.kube.client import KubeClient, KubeError, connect
from aima.kube.resources import Resource

__all__ = ["KubeClient", "KubeError", "Resource", "connect"]
