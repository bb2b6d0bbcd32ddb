"""What a real node changes on its host, read and undone: the checks before it starts (each failure
names the missing part and the command that adds it) and the clean-up after it stops (mounts,
network namespaces, the bridge, iptables chains, nftables tables, cgroups, sysctls).

Only one real node fits a machine: the kubelet's ports, kube-proxy's chains, the bridge and the
kubepods cgroups are host-wide, so a lock file keeps a second one out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_APT_PACKAGES = "containerd runc containernetworking-plugins iptables nftables iproute2 conntrack"
_FIX = f"apt-get install -y {_APT_PACKAGES}"
CNI_BIN_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/run/netns")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
_IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
_LOCK_PATH = Path("/run/aima-real-node.lock")


class HostError(RuntimeError):
    """The host cannot run a real node; the message names what is missing and how to add it."""


def check_prerequisites(kubelet_ports: Iterable[int]) -> None:
    """Fail with every missing prerequisite at once, each with the command that fixes it."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("a real node needs root (the kubelet mounts volumes and makes cgroups): run as root")
    for program, package in (
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("nft", "nftables"),
        ("ip", "iproute2"),
        ("ctr", "containerd"),
    ):
        if shutil.which(program) is None:
            problems.append(f"{program} is not installed: apt-get install -y {package}")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN_DIR / plugin).exists():
            problems.append(
                f"the CNI plugin {CNI_BIN_DIR / plugin} is missing: "
                "apt-get install -y containernetworking-plugins"
            )
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("overlayfs is not available in this kernel: modprobe overlay")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no memory cgroup is mounted at /sys/fs/cgroup: mount the cgroup hierarchy")
    for port in kubelet_ports:
        if _port_taken(port):
            problems.append(
                f"port {port} is taken, by another kubelet or real node: stop it "
                f"(`ss -ltnp 'sport = :{port}'` names it)"
            )
    if problems:
        raise HostError(
            "the real node cannot start on this host:\n- "
            + "\n- ".join(problems)
            + f"\n(all at once: {_FIX})"
        )


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - a probe, closed at once
        except OSError:
            return True
        return False


def take_lock() -> IO[str]:
    """Hold the machine's one real-node lock until the returned file is closed."""
    handle = _LOCK_PATH.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HostError(
            f"a real node already runs on this machine (held by pid {holder}); only one fits: stop it first"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def host_address() -> str:
    """The host's first global IPv4 address: pods reach the API server there (not on loopback)."""
    out = _run(["ip", "-4", "-o", "addr", "show", "scope", "global"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    raise HostError("the host has no global IPv4 address for pods to reach the API server on")


@dataclass(frozen=True)
class Snapshot:
    """What a real node may leave on the host, read at one moment."""

    mounts: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    chains: frozenset[str]
    nft_tables: frozenset[str]
    sysctls: tuple[tuple[str, str], ...]

    def added_since(self, before: Snapshot) -> dict[str, list[str]]:
        """What this snapshot has that ``before`` had not (empty lists when the host is clean)."""
        return {
            "mounts": sorted(self.mounts - before.mounts),
            "network namespaces": sorted(self.netns - before.netns),
            "links": sorted(self.links - before.links),
            "iptables chains": sorted(self.chains - before.chains),
            "nftables tables": sorted(self.nft_tables - before.nft_tables),
            "sysctls": sorted(f"{k}={v}" for k, v in set(self.sysctls) - set(before.sysctls)),
        }


def snapshot() -> Snapshot:
    """Read the host's mounts, network namespaces, links, chains and the sysctls a node changes."""
    return Snapshot(
        mounts=frozenset(_mount_points()),
        netns=frozenset(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else frozenset(),
        links=frozenset(p.name for p in Path("/sys/class/net").iterdir()),
        chains=frozenset(_chains()),
        nft_tables=frozenset(_nft_tables()),
        sysctls=tuple((name, _read_sysctl(name)) for name in SYSCTLS),
    )


def _mount_points() -> list[str]:
    # Field 5 of mountinfo is the mount point, with spaces escaped as \040.
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _read_sysctl(name: str) -> str:
    path = Path("/proc/sys") / name
    return path.read_text().strip() if path.exists() else ""


def _chains() -> list[str]:
    chains: list[str] = []
    for program in ("iptables", "ip6tables"):
        result = subprocess.run([f"{program}-save"], capture_output=True, text=True, check=False)
        table = ""
        for line in result.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                name, policy = line[1:].split()[:2]
                # A built-in chain at ACCEPT is a table's default, there from the table's first use
                # (a fresh host has no tables until kube-proxy's first rule): nothing to undo.
                if policy != "ACCEPT":
                    chains.append(f"{program}/{table}/{name}")
    return chains


def _nft_tables() -> list[str]:
    """The host's nftables tables as "family name", but for iptables-nft's (``_chains`` reads those)."""
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    tables: list[str] = []
    for line in result.stdout.splitlines():
        _, family, name = line.split()  # "table inet kube-network-policies"
        if not (family in ("ip", "ip6") and name in _IPTABLES_TABLES):
            tables.append(f"{family} {name}")
    return tables


def nft_table(table: str) -> str:
    """The rules of one nftables table ("family name") as `nft list` prints them; "" when absent."""
    result = subprocess.run(
        ["nft", "list", "table", *table.split()], capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else ""


def delete_nft_table(table: str) -> None:
    """Delete one nftables table ("family name") if it exists."""
    subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True, check=False)


def restore(before: Snapshot, *, folders: Iterable[Path], bridge: str) -> None:
    """Undo what a node left since ``before``: mounts under ``folders``, new network namespaces,
    the bridge, the KUBE-/CNI- chains and the sysctls. Every step runs even when one fails."""
    for point in sorted(set(_mount_points()) - before.mounts, key=len, reverse=True):
        if any(point.startswith(str(folder)) for folder in folders) or point.startswith(str(NETNS_DIR)):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if NETNS_DIR.is_dir():
        for name in {p.name for p in NETNS_DIR.iterdir()} - before.netns:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    if Path("/sys/class/net", bridge).exists():
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    for program in ("iptables", "ip6tables"):
        _delete_chains(program)
    for name, value in before.sysctls:
        path = Path("/proc/sys") / name
        if value and path.exists() and path.read_text().strip() != value:
            path.write_text(value)


def _delete_chains(program: str) -> None:
    """Delete the rules that jump to KUBE-/CNI- chains, then flush and delete those chains."""
    dump = subprocess.run([f"{program}-save"], capture_output=True, text=True, check=False).stdout
    table = ""
    ours: dict[str, list[str]] = {}
    jumps: list[tuple[str, list[str]]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
            ours.setdefault(table, []).append(line[1:].split()[0])
        elif line.startswith("-A "):
            rule = shlex.split(line)
            chain = rule[1]
            if not chain.startswith(CHAIN_PREFIXES) and any(a.startswith(CHAIN_PREFIXES) for a in rule[2:]):
                jumps.append((table, rule))
    for table, rule in jumps:
        subprocess.run([program, "-w", "-t", table, "-D", *rule[1:]], capture_output=True, check=False)
    for table, chains in ours.items():
        for chain in chains:
            subprocess.run([program, "-w", "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in chains:
            subprocess.run([program, "-w", "-t", table, "-X", chain], capture_output=True, check=False)


def remove_cgroups(name: str) -> None:
    """Remove the cgroup folders called ``name`` (the kubelet's kubepods), deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for folder in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            _rmdir(folder)
        _rmdir(top)


def _rmdir(folder: Path) -> None:
    # Still in use or already gone: the caller's check reports what stays.
    with contextlib.suppress(OSError):
        folder.rmdir()


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a socket path only our node uses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a process with this id exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HostError(f"{shlex.join(argv)} failed: {result.stderr.strip()}")
    return result
