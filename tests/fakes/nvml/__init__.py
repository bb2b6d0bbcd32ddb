"""A fake NVML: `fake_nvml.c` is a real `libnvidia-ml.so.1` (same C functions, signatures and return
codes pynvml calls) that answers from a text file describing GPUs and faults.

Why a C library and not patched Python: the code under test and pynvml run unchanged, down to the
ctypes calls; only the library at the end of `CDLL("libnvidia-ml.so.1")` differs. It is compiled
once per session with the system C compiler, with the soname `libnvidia-ml.so.1`, and loaded in
two ways:
- in-process: `preload()` opens it by path; glibc's dlopen then answers pynvml's later
  `CDLL("libnvidia-ml.so.1")` with the already loaded object whose soname matches;
- in a subprocess: `LD_LIBRARY_PATH` naming its folder, exactly how the real library is found.
The library reads `$FAKE_NVML_CONFIG` on every nvmlInit, so each test describes its own machine.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
CONFIG_ENV = "FAKE_NVML_CONFIG"
GIB = 1024**3

# NVML return codes the tests inject
DRIVER_NOT_LOADED = 9
NOT_SUPPORTED = 3
NO_PERMISSION = 4


@dataclass
class FakeGpu:
    """One GPU of the fake; -1 in a figure makes NVML answer NOT_SUPPORTED for it."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total: int = 80 * GIB
    memory_used: int = 2 * GIB
    memory_reserved: int = 512 * 1024**2
    """The driver's own share; -1 makes the library lack nvmlDeviceGetMemoryInfo_v2's answer."""
    util_gpu: int = 35
    util_memory: int = 20
    temperature: int = 55
    power_mw: int = 250_000
    limit_mw: int = 700_000
    min_limit_mw: int = 200_000
    max_limit_mw: int = 700_000
    ecc_uncorrected: int = 0
    mig: int = 0
    power_set: int = 0
    """0: setting a power limit works; NOT_SUPPORTED or NO_PERMISSION: NVML refuses with that code."""
    lost: bool = False
    """Every call about this GPU answers NVML_ERROR_GPU_IS_LOST."""
    xids: list[int] = field(default_factory=list)
    """Critical XID events waiting to be delivered."""


def gb10(uuid: str) -> FakeGpu:
    """A GB10 (DGX Spark): unified memory, so NVML has no memory figures, and no ECC or MIG."""
    return FakeGpu(
        uuid=uuid, name="NVIDIA GB10", memory_total=-1, ecc_uncorrected=-1, mig=-1, power_set=NOT_SUPPORTED
    )


def write_config(path: Path, gpus: list[FakeGpu], *, driver: str = "580.65.06", init_error: int = 0) -> Path:
    """Describe a machine for the fake library; returns ``path``."""
    lines = [f"driver={driver}", "cuda=13000", f"init_error={init_error}"]
    for gpu in gpus:
        lines.append("gpu")
        for key, value in vars(gpu).items():
            if key == "xids":
                value = ",".join(str(x) for x in value)
            lines.append(f"{key}={int(value) if isinstance(value, bool) else value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def build(directory: Path) -> Path:
    """Compile the fake into ``directory``/libnvidia-ml.so.1 with the system C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) to build the fake NVML library")
    target = directory / LIBRARY_NAME
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-Wl,-soname,{LIBRARY_NAME}",
         "-o", str(target), str(SOURCE)],
        check=True,
    )  # fmt: skip
    return target


def preload(library: Path) -> None:
    """Load the fake into this process so that pynvml's CDLL("libnvidia-ml.so.1") finds it."""
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
