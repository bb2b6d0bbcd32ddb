"""Child processes of the control plane: start in their own session, wait for health, stop for good."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

_STOP_GRACE_SECONDS = 10.0


def interrupt_on_sigterm() -> None:
    """Let SIGTERM (a timeout, `kill`, CI's end) unwind this process as Ctrl-C does, once: the
    `finally` blocks and fixtures stop the control plane and the real node, rather than leave them
    running without an owner; a second SIGTERM does not break off that cleanup. Main thread only."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


class ProcessError(RuntimeError):
    """A component exited or never became healthy; the message carries the end of its log."""


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10000


_PORTS = random.Random()  # noqa: S311 - not for security
# Its own generator: the global one is the tests' (hypothesis fails a strategy whose global random
# state another thread moved while it drew).


def free_port() -> int:
    """A loopback port that nothing listens on right now, below the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` is an ephemeral one, and until the program it is meant
    for binds it, any outgoing connection may get it as its source port (one CI run lost its kwok
    that way). Ports below the range are never given to outgoing connections.
    """
    lowest_ephemeral = _lowest_ephemeral_port()
    if lowest_ephemeral - _LOWEST_PORT >= 1000:
        for _ in range(100):
            port = _PORTS.randrange(_LOWEST_PORT, lowest_ephemeral)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lowest_ephemeral_port() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_is_open(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Component:
    """One running program of the control plane, with its log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the program in a new session so that stopping it also stops anything it spawned."""
        log = self.log_path.open("ab")
        try:
            # The argv is built from our own paths and numbers, never from a shell string.
            self._popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        """The process id while it has one."""
        return self._popen.pid if self._popen else None

    def running(self) -> bool:
        """Whether the process is alive."""
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the component's log, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after a grace period."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=_STOP_GRACE_SECONDS)
        # Children that outlived their leader share its process group id.
        _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen = None

    def wait_healthy(self, url: str, *, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        """Poll ``url`` until it answers 200, failing early with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessError(f"{self.name} exited before it became healthy:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ssl_context) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.25)
        raise ProcessError(
            f"{self.name} was not healthy at {url} after {timeout:.0f}s ({last_error}):\n{self.log_tail()}"
        )


def wait_until(
    what: str, check: Callable[[], bool], *, components: Sequence[Component], timeout: float
) -> None:
    """Poll ``check`` until it holds; fail early, with its log tail, if a component exits, and on
    timeout with the tail of every component's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for component in components:
            if not component.running():
                raise ProcessError(
                    f"{component.name} exited while waiting for {what}:\n{component.log_tail()}"
                )
        time.sleep(0.5)
    tails = "\n".join(f"--- {c.name}\n{c.log_tail(15)}" for c in components)
    raise ProcessError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def kill(pid: int) -> None:
    """SIGKILL one process by its recorded id."""
    os.kill(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
