"""Locating (and building on first use) the pinned control plane binaries."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# testenv/aima_testenv/binaries.py: the package runs from a checkout (an editable install), never
# from a wheel, since the scripts and the chart it drives live beside it.
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "testenv" / "build.sh"
_PROGRAMS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "kubelet",
    "kube-proxy",
    "coredns",
    "local-path-provisioner",
)


def cache_root() -> Path:
    """The folder build.sh and images.sh cache into (``AIMA_TESTENV_CACHE`` to move it)."""
    if configured := os.environ.get("AIMA_TESTENV_CACHE"):
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aima-testenv"


class BinariesError(RuntimeError):
    """The control plane binaries could not be found or built."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the control plane programs, all in one versioned cache folder."""

    bin_dir: Path

    def path(self, program: str) -> Path:
        """The path of one program, e.g. ``binaries.path("kubectl")``."""
        return self.bin_dir / program

    @property
    def kwok_stages(self) -> Path:
        """kwok's upstream Stage definitions, copied from its module next to the binaries."""
        return self.bin_dir.parent / "kwok" / "stage"

    def missing(self) -> list[str]:
        """Programs that are absent or not executable."""
        return [p for p in _PROGRAMS if not os.access(self.path(p), os.X_OK)]


def ensure_binaries(bin_dir: Path | None = None) -> Binaries:
    """Return the binaries, building them with ``hack/testenv/build.sh`` when not cached yet.

    ``bin_dir`` (or ``AIMA_TESTENV_BIN``) points at a prepared folder and skips the build.
    """
    explicit = bin_dir or (
        Path(os.environ["AIMA_TESTENV_BIN"]) if os.environ.get("AIMA_TESTENV_BIN") else None
    )
    if explicit is None:
        explicit = _build()
    binaries = Binaries(bin_dir=explicit)
    if missing := binaries.missing():
        raise BinariesError(f"control plane binaries missing in {explicit}: {', '.join(missing)}")
    return binaries


def _build() -> Path:
    # The script prints progress on stderr (passed through) and the folder on its last stdout line.
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}; see its output above")
    return Path(result.stdout.strip().splitlines()[-1])
