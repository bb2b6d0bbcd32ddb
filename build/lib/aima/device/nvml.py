"""Reading GPUs through NVML (pynvml), behind the small `GpuSource` interface the agent uses.

pynvml loads `libnvidia-ml.so.1` with ctypes, which the NVIDIA container runtime mounts into the
pod from the host's driver. Without it (no driver, or a pod not run with the NVIDIA runtime) the
source reports no GPUs and says why; it never raises out of `read()`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from aima.api.device import Gpu, GpuHealth, MemoryKind
from aima.domain.devices import Reading, health_of, unified_memory_mib

__all__ = ["GpuSource", "NvmlSource", "PowerLimitRefused"]

logger = logging.getLogger("aima.device")
_MIB = 1024**2
_XID_CRITICAL_ERROR = 0x8  # nvmlEventTypeXidCriticalError


class PowerLimitRefused(Exception):
    """A power limit could not be applied; the message says why in words a person can act on."""


class GpuSource(Protocol):
    """What the agent needs from the GPUs: a reading, and a power limit change."""

    def read(self) -> Reading: ...

    def set_power_limit(self, *, uuid: str, watts: int) -> None: ...

    def close(self) -> None: ...


def _pynvml() -> ModuleType:
    # The `pynvml` distribution (a shim over nvidia-ml-py, which provides the module) warns on
    # import that it is deprecated; the module is the same, so the warning is not ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module("pynvml")


class NvmlSource:
    """GPUs through NVML; initializes lazily and again after a failure (a driver may load later)."""

    def __init__(self, *, meminfo: Path = Path("/proc/meminfo")) -> None:
        self._nvml = _pynvml()
        self._meminfo = meminfo
        self._initialized = False
        self._events: Any = None
        self._last_xid: dict[str, int] = {}
        self._lock = threading.Lock()  # NVML calls come from worker threads; keep them in turn

    def read(self) -> Reading:
        """Every GPU's identity, figures and health, or no GPUs and the reason."""
        with self._lock:
            if (failure := self._init()) is not None:
                return Reading(nvml=False, message=failure)
            nvml = self._nvml
            self._drain_xids()
            gpus = tuple(self._gpu(index) for index in range(nvml.nvmlDeviceGetCount()))
            return Reading(
                nvml=True,
                driver_version=nvml.nvmlSystemGetDriverVersion(),
                cuda_version=self._optional(self._cuda_version),
                gpus=gpus,
            )

    def set_power_limit(self, *, uuid: str, watts: int) -> None:
        """Apply a power limit to the GPU of this UUID; raise PowerLimitRefused with the reason."""
        with self._lock:
            if (failure := self._init()) is not None:
                raise PowerLimitRefused(f"NVML is not available: {failure}")
            nvml = self._nvml
            handle = self._handle_of(uuid)
            try:
                low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
                if not low // 1000 <= watts <= high // 1000:
                    raise PowerLimitRefused(
                        f"{watts} W is outside this GPU's range, {low // 1000}-{high // 1000} W"
                    )
                nvml.nvmlDeviceSetPowerManagementLimit(handle, watts * 1000)
            except nvml.NVMLError as error:
                raise PowerLimitRefused(self._refusal(error)) from None

    def close(self) -> None:
        """Release NVML."""
        with self._lock:
            if self._initialized:
                self._initialized = False
                self._events = None
                self._nvml.nvmlShutdown()

    def _init(self) -> str | None:
        """None once NVML is up, else why it is not."""
        if self._initialized:
            return None
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            return self._unavailable(error)
        self._initialized = True
        self._events = self._xid_events()
        return None

    def _xid_events(self) -> Any:
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError:
            return None  # XIDs are then not watched; ECC and lost GPUs still are
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                nvml.nvmlDeviceRegisterEvents(
                    nvml.nvmlDeviceGetHandleByIndex(index), _XID_CRITICAL_ERROR, events
                )
            except nvml.NVMLError as error:
                logger.info("XID events not available for GPU %d: %s", index, error)
        return events

    def _drain_xids(self) -> None:
        """Take every XID event queued since the last reading; the last per GPU is remembered."""
        nvml = self._nvml
        if self._events is None:
            return
        while True:
            try:
                event = nvml.nvmlEventSetWait(self._events, 0)
            except nvml.NVMLError:
                return  # NVML_ERROR_TIMEOUT: the queue is empty
            if event.eventType & _XID_CRITICAL_ERROR:
                uuid = self._optional(nvml.nvmlDeviceGetUUID, event.device)
                if uuid is not None:
                    self._last_xid[uuid] = int(event.eventData)

    def _gpu(self, index: int) -> Gpu:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            return self._figures(index, handle, uuid=uuid, name=nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as error:
            return Gpu(
                index=index,
                uuid=f"unknown-{index}",
                name="unknown",
                health=GpuHealth.UNHEALTHY,
                health_message=f"NVML cannot read this GPU: {error}; it may need a reset",
            )

    def _figures(self, index: int, handle: Any, *, uuid: str, name: str) -> Gpu:
        nvml, optional = self._nvml, self._optional
        memory_kind, total, used, reserved = self._memory(handle)
        utilization = optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        constraints = optional(nvml.nvmlDeviceGetPowerManagementLimitConstraints, handle)
        mig = optional(nvml.nvmlDeviceGetMigMode, handle)
        ecc = optional(
            nvml.nvmlDeviceGetTotalEccErrors,
            handle,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        health, message = health_of(ecc_uncorrected=ecc, last_xid=self._last_xid.get(uuid))
        return Gpu(
            index=index,
            uuid=uuid,
            name=name,
            memory=memory_kind,
            memory_total_mib=total,
            memory_used_mib=used,
            memory_reserved_mib=reserved,
            utilization_percent=utilization.gpu if utilization is not None else None,
            temperature_celsius=optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
            power_watts=_watts(optional(nvml.nvmlDeviceGetPowerUsage, handle)),
            power_limit_watts=_watts(optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
            power_limit_min_watts=_watts(constraints[0]) if constraints else None,
            power_limit_max_watts=_watts(constraints[1]) if constraints else None,
            ecc_uncorrected_errors=ecc,
            last_xid=self._last_xid.get(uuid),
            mig_enabled=bool(mig[0]) if mig is not None else None,
            health=health,
            health_message=message,
        )

    def _memory(self, handle: Any) -> tuple[MemoryKind, int | None, int | None, int | None]:
        """Dedicated memory from NVML (total, used, reserved by the driver); on unified-memory parts
        NVML has none, so system memory."""
        nvml = self._nvml
        try:
            # v2 tells the driver's reservation apart from what processes use (v1 counts it as used,
            # so an idle H200 shows ~600 MiB "used"); drivers before 510 lack it.
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            return MemoryKind.DEDICATED, info.total // _MIB, info.used // _MIB, info.reserved // _MIB
        except nvml.NVMLError_GpuIsLost:
            raise
        except nvml.NVMLError:
            pass
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            return MemoryKind.DEDICATED, info.total // _MIB, info.used // _MIB, None
        except nvml.NVMLError_NotSupported:
            pass
        try:
            figures = unified_memory_mib(self._meminfo.read_text())
        except OSError:
            figures = None
        return MemoryKind.UNIFIED, *(figures or (None, None)), None

    def _handle_of(self, uuid: str) -> Any:
        nvml = self._nvml
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if self._optional(nvml.nvmlDeviceGetUUID, handle) == uuid:
                return handle
        raise PowerLimitRefused(f"no GPU with UUID {uuid} on this node")

    def _cuda_version(self) -> str:
        version = int(self._nvml.nvmlSystemGetCudaDriverVersion())
        return f"{version // 1000}.{version % 1000 // 10}"

    def _optional(self, getter: Any, *args: Any) -> Any:
        """The getter's answer, or None where this GPU or driver does not offer the figure.

        A lost GPU is not a missing figure: that error goes up, and the GPU is reported unhealthy.
        """
        nvml = self._nvml
        try:
            return getter(*args)
        except nvml.NVMLError_GpuIsLost:
            raise
        except nvml.NVMLError:
            return None

    def _unavailable(self, error: Any) -> str:
        nvml = self._nvml
        if isinstance(error, nvml.NVMLError_LibraryNotFound):
            return (
                "libnvidia-ml.so.1 not found: the node has no NVIDIA driver, or the pod does not run "
                "with the NVIDIA container runtime (runtimeClassName: nvidia)"
            )
        if isinstance(error, nvml.NVMLError_DriverNotLoaded):
            return "the NVIDIA kernel driver is not loaded on this node"
        return f"NVML failed to initialize: {error}"

    def _refusal(self, error: Any) -> str:
        nvml = self._nvml
        if isinstance(error, nvml.NVMLError_NoPermission):
            return "NVML refused: setting power limits needs root on the node; run the agent as root"
        if isinstance(error, nvml.NVMLError_NotSupported):
            return "this GPU does not support setting a power limit"
        return f"NVML refused: {error}"


def _watts(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000
