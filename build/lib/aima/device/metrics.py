"""The agent's latest reading in the Prometheus text format (pure).

Names follow Prometheus conventions (base units, `_ratio` for 0..1); labels identify the GPU the way
NVIDIA's dcgm-exporter does (`gpu` index, `UUID`, `modelName`), so dashboards can join the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aima.api.device import Gpu, GpuHealth, MemoryKind
from aima.domain.devices import Reading

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MIB = 1024**2

_GAUGES: tuple[tuple[str, str, Callable[[Gpu], float | None]], ...] = (
    ("aima_gpu_memory_total_bytes", "Memory of the GPU (system memory where unified).",
     lambda g: None if g.memory_total_mib is None else g.memory_total_mib * _MIB),
    ("aima_gpu_memory_used_bytes", "Memory in use.",
     lambda g: None if g.memory_used_mib is None else g.memory_used_mib * _MIB),
    ("aima_gpu_memory_reserved_bytes", "Memory the driver reserves for itself (not in used).",
     lambda g: None if g.memory_reserved_mib is None else g.memory_reserved_mib * _MIB),
    ("aima_gpu_memory_unified", "1 where the memory figures are system memory shared with the CPU.",
     lambda g: float(g.memory is MemoryKind.UNIFIED)),
    ("aima_gpu_utilization_ratio", "Share of time a kernel ran, 0 to 1.",
     lambda g: None if g.utilization_percent is None else g.utilization_percent / 100),
    ("aima_gpu_temperature_celsius", "Core temperature.", lambda g: g.temperature_celsius),
    ("aima_gpu_power_watts", "Power drawn.", lambda g: g.power_watts),
    ("aima_gpu_power_limit_watts", "Power limit enforced.", lambda g: g.power_limit_watts),
    ("aima_gpu_ecc_uncorrected_errors", "Uncorrectable ECC errors since the driver loaded.",
     lambda g: g.ecc_uncorrected_errors),
    ("aima_gpu_last_xid", "Last critical XID seen since the agent started.", lambda g: g.last_xid),
    ("aima_gpu_mig_enabled", "1 where MIG mode is on.",
     lambda g: None if g.mig_enabled is None else float(g.mig_enabled)),
    ("aima_gpu_healthy", "1 when healthy, 0 when not (ECC, XID, lost).",
     lambda g: float(g.health is GpuHealth.HEALTHY)),
)  # fmt: skip


def render(reading: Reading, *, node: str) -> str:
    """The exposition text for one reading of ``node``."""
    lines = [
        "# HELP aima_device_nvml_available 1 when NVML loaded on the node, 0 when not.",
        "# TYPE aima_device_nvml_available gauge",
        f'aima_device_nvml_available{{node="{_escape(node)}"}} {int(reading.nvml)}',
        "# HELP aima_device_gpus GPUs NVML found on the node.",
        "# TYPE aima_device_gpus gauge",
        f'aima_device_gpus{{node="{_escape(node)}"}} {len(reading.gpus)}',
    ]
    for name, help_text, value_of in _GAUGES:
        samples = list(_samples(reading.gpus, node=node, value_of=value_of))
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{{{labels}}} {value}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _samples(
    gpus: Iterable[Gpu], *, node: str, value_of: Callable[[Gpu], float | None]
) -> Iterable[tuple[str, str]]:
    for gpu in gpus:
        value = value_of(gpu)
        if value is not None:
            labels = (
                f'node="{_escape(node)}",gpu="{gpu.index}",UUID="{_escape(gpu.uuid)}",'
                f'modelName="{_escape(gpu.name)}"'
            )
            yield labels, _number(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
