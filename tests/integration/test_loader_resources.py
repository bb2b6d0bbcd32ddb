"""What `aima loader` takes from its pod: at most `--parallel` files downloading at once (3 by
default), a clean failure that keeps the bytes when the disk fills up mid-write, and a peak memory
that does not grow with the size of the file it streams."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aima.loader.cli import loader
from fakes.hub import FakeHub, HubFile
from fakes.serving import generate_file, running_in_thread

pytestmark = pytest.mark.integration

REPO = "acme/tiny-llm"
PEAK_RSS_LIMIT = 150 * 10**6  # the target: under 150 MB whatever the model's size


def _invoke(url: str, dest: Path, *options: str) -> Result:
    arguments = ["--source", f"hf://{REPO}", "--dest", str(dest), "--endpoint", url, *options]
    return CliRunner().invoke(loader, arguments, catch_exceptions=False)


@pytest.mark.parametrize(("options", "bound"), [((), 3), (("--parallel", "5"), 5), (("--parallel", "1"), 1)])
def test_files_download_in_parallel_up_to_the_bound(
    tmp_path: Path, options: tuple[str, ...], bound: int
) -> None:
    served = tmp_path / "served"
    files = {}
    for index in range(10):
        generate_file(served / f"shard{index}", 3 * 2**20, seed=index)
        files[f"model-{index:05d}-of-00010.safetensors"] = HubFile(served / f"shard{index}")
    hub = FakeHub(REPO, files)
    hub.faults.delay_per_chunk = 0.05  # every file takes 0.15 s: the transfers the bound lets run overlap
    with running_in_thread(hub.app()) as url:
        result = _invoke(url, tmp_path / "model", *options)
    assert result.exit_code == 0, result.stderr
    assert hub.stats.most_in_flight == bound
    assert len(hub.stats.requests) == 10


class FillingDisk:
    """`os.writev` on a file system with `room` bytes left: a write takes what fits (a short write)
    and the next one fails with ENOSPC, as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self._writev = os.writev
        self._lock = threading.Lock()

    def __call__(self, fd: int, buffers: Sequence[memoryview]) -> int:
        with self._lock:
            if self.room == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fitting, left = [], self.room
            for buffer in buffers:
                if left == 0:
                    break
                fitting.append(buffer[:left])
                left -= len(fitting[-1])
            written = self._writev(fd, fitting)
            self.room -= written
            return written


def test_a_disk_that_fills_up_mid_write_fails_cleanly_and_the_next_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "served" / "weights"
    generate_file(weights, 20 * 2**20, seed=8)
    hub = FakeHub(REPO, {"model.safetensors": HubFile(weights)})
    room = 12 * 2**20 + 345  # more than the free-space check asks for: the disk fills up while writing
    dest = tmp_path / "model"
    with running_in_thread(hub.app()) as url:
        with monkeypatch.context() as patch:
            patch.setattr(os, "writev", FillingDisk(room))
            full = _invoke(url, dest)
        # What the disk took is kept, and nothing else: no lock, no manifest of a file never finished.
        assert sorted(path.name for path in dest.iterdir()) == ["model.safetensors.part"]
        assert (dest / "model.safetensors.part").read_bytes() == weights.read_bytes()[:room]
        resumed = _invoke(url, dest)

    reason = "The disk filled up while writing model.safetensors: No space left on device"
    assert full.exit_code == 1
    assert full.stderr == f"aima loader: {reason}\n"
    last = json.loads(full.stdout.splitlines()[-1])
    assert (last["phase"], last["message"]) == ("Failed", reason)
    assert hub.stats.requests.count(("model.safetensors", None)) == 1  # a full disk is not retried

    assert resumed.exit_code == 0, resumed.stderr
    assert hub.stats.requests[-1] == ("model.safetensors", f"bytes={room}-")
    assert (dest / "model.safetensors").read_bytes() == weights.read_bytes()


# Runs the command given as its arguments, then prints the peak RSS (KiB) of that child. A small parent
# of its own, because Linux folds the parent's high-water mark into a child's ru_maxrss at exec, and
# pytest's (which served the file) would hide the loader's.
_PEAK_RSS_OF_CHILD = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def test_streaming_a_large_file_keeps_the_loader_s_peak_memory_bounded(tmp_path: Path) -> None:
    size = 512 * 2**20
    weights = tmp_path / "served" / "weights"
    generate_file(weights, size, seed=9)
    hub = FakeHub(REPO, {"model.safetensors": HubFile(weights)})
    dest = tmp_path / "model"
    command = [sys.executable, "-m", "aima.loader", "--source", f"hf://{REPO}", "--dest", str(dest)]
    with running_in_thread(hub.app()) as url:
        measured = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS_OF_CHILD, *command, "--endpoint", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert measured.returncode == 0, measured.stderr[-2000:]
    *progress, peak_kib = measured.stdout.splitlines()
    assert json.loads(progress[-1])["phase"] == "Ready"
    assert (dest / "model.safetensors").stat().st_size == size
    peak = int(peak_kib) * 1024
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB for a {size // 2**20} MiB file"
