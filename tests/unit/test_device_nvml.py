"""NvmlSource against the fake libnvidia-ml.so.1: pynvml runs unchanged, only the C library is fake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aima.api.device import GpuHealth, MemoryKind
from aima.device.nvml import NvmlSource, PowerLimitRefused
from fakes.nvml import DRIVER_NOT_LOADED, NO_PERMISSION, FakeGpu, gb10, write_config

pytestmark = pytest.mark.unit

MEMINFO = "MemTotal:       131072000 kB\nMemFree:         1000 kB\nMemAvailable:   98304000 kB\n"


@pytest.fixture
def machine(
    fake_nvml_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, NvmlSource]]:
    """A config file the test fills in, and a source that reads it at its first read()."""
    config = tmp_path / "nvml.conf"
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(config))
    (tmp_path / "meminfo").write_text(MEMINFO)
    source = NvmlSource(meminfo=tmp_path / "meminfo")
    yield config, source
    source.close()


def test_reads_every_gpu_with_its_figures(machine: tuple[Path, NvmlSource]) -> None:
    config, source = machine
    write_config(config, [FakeGpu(uuid="GPU-a", util_gpu=90, temperature=71), FakeGpu(uuid="GPU-b", mig=1)])
    reading = source.read()
    assert reading.nvml and reading.driver_version == "580.65.06" and reading.cuda_version == "13.0"
    first, second = reading.gpus
    assert (first.index, first.uuid, first.name) == (0, "GPU-a", "NVIDIA H100 80GB HBM3")
    assert (first.memory_total_mib, first.memory_used_mib, first.memory) == (
        81920,
        2048,
        MemoryKind.DEDICATED,
    )
    assert first.memory_reserved_mib == 512  # the driver's share, apart from what processes use
    assert (first.utilization_percent, first.temperature_celsius) == (90, 71)
    assert (first.power_watts, first.power_limit_watts, first.power_limit_min_watts) == (250.0, 700.0, 200.0)
    assert first.health is GpuHealth.HEALTHY and first.ecc_uncorrected_errors == 0
    assert (first.mig_enabled, second.mig_enabled) == (False, True)


def test_a_driver_without_memory_info_v2_counts_its_reservation_as_used(
    machine: tuple[Path, NvmlSource],
) -> None:
    config, source = machine
    write_config(config, [FakeGpu(uuid="GPU-old", memory_reserved=-1, memory_used=3 * 1024**3)])
    (gpu,) = source.read().gpus
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.memory_reserved_mib) == (81920, 3072, None)


def test_a_failing_gpu_is_unhealthy_and_the_others_still_report(machine: tuple[Path, NvmlSource]) -> None:
    config, source = machine
    gpus = [
        FakeGpu(uuid="GPU-ok", xids=[13]),  # an application's fault, not the GPU's
        FakeGpu(uuid="GPU-lost", lost=True),
        FakeGpu(uuid="GPU-ecc", ecc_uncorrected=2),
        FakeGpu(uuid="GPU-xid", xids=[79]),
    ]
    write_config(config, gpus)
    reading = source.read()
    health = {g.uuid: (g.health, g.health_message) for g in reading.gpus}
    assert health["GPU-ok"] == (GpuHealth.HEALTHY, None)
    assert health["unknown-1"][0] is GpuHealth.UNHEALTHY and "GPU is lost" in str(health["unknown-1"][1])
    assert health["GPU-ecc"] == (GpuHealth.UNHEALTHY, "2 uncorrectable ECC errors since the driver loaded")
    assert health["GPU-xid"] == (GpuHealth.UNHEALTHY, "XID 79: the GPU fell off the bus")
    # XIDs are events: delivered once, remembered by the agent for as long as it runs.
    assert {g.uuid: g.last_xid for g in source.read().gpus}["GPU-xid"] == 79


def test_no_driver_reports_no_gpus_and_why(machine: tuple[Path, NvmlSource]) -> None:
    config, source = machine
    write_config(config, [FakeGpu(uuid="GPU-a")], init_error=DRIVER_NOT_LOADED)
    reading = source.read()
    assert (reading.nvml, reading.gpus) == (False, ())
    assert reading.message == "the NVIDIA kernel driver is not loaded on this node"
    write_config(config, [FakeGpu(uuid="GPU-a")])  # the driver loads later: the next read sees it
    assert [g.uuid for g in source.read().gpus] == ["GPU-a"]


def test_unified_memory_reports_system_memory(machine: tuple[Path, NvmlSource]) -> None:
    config, source = machine
    write_config(config, [gb10("GPU-spark")])
    (gpu,) = source.read().gpus
    assert gpu.memory is MemoryKind.UNIFIED
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (128000, 32000)
    assert (gpu.ecc_uncorrected_errors, gpu.mig_enabled, gpu.health) == (None, None, GpuHealth.HEALTHY)


def test_power_limits_apply_within_range_and_refusals_say_why(machine: tuple[Path, NvmlSource]) -> None:
    config, source = machine
    write_config(
        config, [FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", power_set=NO_PERMISSION), gb10("GPU-c")]
    )
    source.set_power_limit(uuid="GPU-a", watts=450)
    assert source.read().gpus[0].power_limit_watts == 450.0
    with pytest.raises(PowerLimitRefused, match="outside this GPU's range, 200-700 W"):
        source.set_power_limit(uuid="GPU-a", watts=900)
    with pytest.raises(PowerLimitRefused, match="needs root"):
        source.set_power_limit(uuid="GPU-b", watts=300)
    with pytest.raises(PowerLimitRefused, match="no GPU with UUID GPU-z"):
        source.set_power_limit(uuid="GPU-z", watts=300)


def _run_once(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("aima")), "device-agent", "--once"],
        env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"} | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_agent_finds_the_library_by_its_name_and_runs_without_one(
    fake_nvml_library: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "nvml.conf", [FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")])
    found = _run_once({"LD_LIBRARY_PATH": str(fake_nvml_library.parent), "FAKE_NVML_CONFIG": str(config)})
    assert (found["nvml"], found["gpuCount"]) == (True, 2)
    missing = _run_once({"FAKE_NVML_CONFIG": str(config)})
    assert (missing["nvml"], missing["gpuCount"]) == (False, 0)
    assert "libnvidia-ml.so.1 not found" in str(missing["message"])
