"""The one typed configuration of the operator, built once at start-up from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from aima import __version__

_ENV_PREFIX = "AIMA_"


class Settings(BaseModel):
    """Every knob of the operator, with its default and unit. Nothing below `__main__` reads the
    environment: components receive this object or the values they need from it."""

    model_config = ConfigDict(frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty serves the whole cluster."""
    kubeconfig: Path | None = None
    """Kubeconfig to use; empty uses the in-cluster service account, then $KUBECONFIG."""
    image: str = f"ghcr.io/aima-dev/aima:{__version__}"
    """The operator's own image; loader Jobs run it with `aima loader`."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of the loader Jobs."""
    resync_seconds: float = Field(default=300.0, gt=0)
    """How often every object is reconciled even without events (drift is corrected by then)."""
    retry_seconds: float = Field(default=5.0, gt=0)
    """How soon a failed reconcile is tried again (kopf's default would be 60 s)."""
    loader_backoff_limit: int = Field(default=3, ge=0)
    """Retries of a failed loader Job before the Model reports Failed."""
    hf_endpoint: str = "https://huggingface.co"
    """Hugging Face Hub endpoint for hf:// sources; set a mirror here."""
    ollama_registry: str = "https://registry.ollama.ai"
    """Registry for ollama:// sources."""
    modelscope_endpoint: str = "https://www.modelscope.cn"
    """Endpoint for modelscope:// sources."""
    catalog_dir: Path | None = None
    """Folder with the engine catalog (`engines/*.yaml`) the operator installs as Engine objects at
    start; the image ships it at /opt/aima/catalog. Empty installs nothing."""
    leader_election: bool = False
    """Run only while holding a Lease, so that of several replicas exactly one acts."""
    lease_namespace: str = "default"
    """Namespace of the leader Lease (the chart sets the operator's own)."""
    lease_name: str = "aima-operator"
    """Name of the leader Lease."""
    lease_duration_seconds: int = Field(default=15, ge=2)
    """How long a Lease holds without renewal; a crashed leader is replaced after at most this."""
    lease_renew_seconds: float = Field(default=5.0, gt=0)
    """How often the leader renews its Lease."""
    identity: str = Field(default_factory=socket.gethostname)
    """This replica's name in the Lease (the pod name in a cluster)."""
    default_gpu_memory_mib: int = Field(default=81920, gt=0)
    """GPU memory assumed for estimates when no node advertises nvidia.com/gpu.memory."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `AIMA_<FIELD>` variables, e.g. AIMA_NAMESPACES=a,b or AIMA_RESYNC_SECONDS=60."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = tuple(p for p in raw.split(",") if p) if name == "namespaces" else raw
        if "kubeconfig" not in values and env.get("KUBECONFIG"):
            values["kubeconfig"] = env["KUBECONFIG"].split(os.pathsep)[0]
        return cls.model_validate(values)
