"""The loader's own process (`python -m aima.loader`, as the loader Job runs it) SIGKILLed mid-file,
as a node's OOM killer or an evicted pod does: nothing final is left before it is verified, the
dead holder's lock is taken over, each run resumes from the bytes the last one wrote, and a part
file damaged while no loader ran is caught by the digest and fetched again."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aima.loader.paths import LOCK_NAME, MANIFEST_NAME
from fakes.hub import FakeHub, HubFile
from fakes.serving import CHUNK, Faults, generate_file, running_in_thread

pytestmark = pytest.mark.integration

REPO = "acme/tiny-llm"
NAME = "model.safetensors"
SIZE = 48 * CHUNK
PART = f"{NAME}.part"


@pytest.fixture
def hub(tmp_path: Path) -> FakeHub:
    """One 48 MiB file served at about 25 MiB/s, so a transfer is open long enough to kill."""
    generate_file(tmp_path / "served" / NAME, SIZE, seed=3)
    return FakeHub(REPO, {NAME: HubFile(tmp_path / "served" / NAME)}, faults=Faults(delay_per_chunk=0.04))


@pytest.fixture
def hub_url(hub: FakeHub) -> Iterator[str]:
    with running_in_thread(hub.app()) as url:
        yield url


def start_loader(url: str, dest: Path) -> subprocess.Popen[bytes]:
    """The loader as its Job runs it, its output appended to ``loader.log`` beside ``dest``."""
    argv = [
        sys.executable,
        "-m",
        "aima.loader",
        f"--source=hf://{REPO}",
        f"--dest={dest}",
        f"--endpoint={url}",
    ]
    with (dest.parent / "loader.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def log_of(dest: Path) -> str:
    return (dest.parent / "loader.log").read_text(errors="replace")[-2000:]


def kill_when_part_reaches(loader: subprocess.Popen[bytes], part: Path, size: int) -> int:
    """SIGKILL the loader once its part file holds ``size`` bytes; the bytes it kept."""
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= size):
        assert loader.poll() is None, f"the loader ended before the kill: {log_of(part.parent)}"
        assert time.monotonic() < deadline, f"the part file never reached {size} bytes"
        time.sleep(0.01)
    loader.send_signal(signal.SIGKILL)
    assert loader.wait(timeout=10) == -signal.SIGKILL
    return part.stat().st_size


def finish(loader: subprocess.Popen[bytes], dest: Path) -> None:
    assert loader.wait(timeout=120) == 0, log_of(dest)


def test_three_kills_mid_file_each_resumed_where_the_last_run_stopped(
    hub: FakeHub, hub_url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    kept = []
    for quarter in (1, 2, 3):
        loader = start_loader(hub_url, dest)
        kept.append(kill_when_part_reaches(loader, dest / PART, quarter * SIZE // 4))
        # Killed: nothing final, no manifest, and the dead holder's lock left behind.
        assert not (dest / NAME).exists() and not (dest / MANIFEST_NAME).exists()
        assert json.loads((dest / LOCK_NAME).read_text())["pid"] == loader.pid
    finish(start_loader(hub_url, dest), dest)
    assert hashlib.sha256((dest / NAME).read_bytes()).hexdigest() == hub.digest(NAME)
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [(NAME, hub.digest(NAME))]
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST_NAME, NAME]
    # Every run asked for the rest of the file from the bytes the killed one had written.
    ranges = [header for name, header in hub.stats.requests if name == NAME]
    assert ranges == [None, *(f"bytes={k}-" for k in kept)]
    assert kept == sorted(kept) and kept[0] > 0


def test_a_part_file_damaged_after_a_kill_is_caught_by_the_digest_and_fetched_again(
    hub: FakeHub, hub_url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    kept = kill_when_part_reaches(start_loader(hub_url, dest), dest / PART, SIZE // 2)
    with (dest / PART).open("r+b") as part:  # a byte flipped on disk while no loader ran
        part.seek(kept // 2)
        flipped = bytes([part.read(1)[0] ^ 0xFF])
        part.seek(kept // 2)
        part.write(flipped)
    finish(start_loader(hub_url, dest), dest)
    assert hashlib.sha256((dest / NAME).read_bytes()).hexdigest() == hub.digest(NAME)
    # The resumed file failed its digest, so the whole file came again.
    assert hub.stats.body_bytes[NAME] >= kept + (SIZE - kept) + SIZE
