"""Who AIMA is to the API server: the pod's ServiceAccount, or the current context of a kubeconfig.

One way to authenticate: a bearer token or a client certificate, over TLS checked against the
cluster's CA. Credentials that need a program or a refresh (exec plugins, auth providers) are not
read: the operator runs as its ServiceAccount, and tests and `aima dev` with a plain kubeconfig.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["Credentials", "LoginError", "login"]

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_SERVER: Final = "https://kubernetes.default.svc"
_PATHS: Final = ("certificate-authority", "client-certificate", "client-key")
"""The kubeconfig fields that name files; relative ones are relative to their kubeconfig."""

Entry = dict[str, Any]


class LoginError(RuntimeError):
    """There is nothing to log in with, or the kubeconfig lacks what its current context names."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""

    server: str
    token: str | None
    tls: ssl.SSLContext | bool
    """The TLS context (CA, client certificate), or False where the kubeconfig skips verification."""


def login(kubeconfig: Path | None = None) -> Credentials:
    """The credentials of ``kubeconfig``; without one, of the pod's ServiceAccount, else of the
    kubeconfig kubectl would use ($KUBECONFIG, else ~/.kube/config)."""
    if kubeconfig is not None:
        return _from_kubeconfig([kubeconfig])
    if (SERVICE_ACCOUNT / "token").exists():
        return _from_service_account()
    paths = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    default = Path("~/.kube/config").expanduser()
    if not paths and default.exists():
        paths = [default]
    if not paths:
        raise LoginError("no ServiceAccount token and no kubeconfig to log in with")
    return _from_kubeconfig(paths)


def _from_service_account() -> Credentials:
    ca = SERVICE_ACCOUNT / "ca.crt"
    return Credentials(
        server=IN_CLUSTER_SERVER,
        token=(SERVICE_ACCOUNT / "token").read_text().strip() or None,
        tls=ssl.create_default_context(cafile=str(ca) if ca.exists() else None),
    )


def _from_kubeconfig(paths: list[Path]) -> Credentials:
    """The current context's cluster and user; of several files, the first to name an entry (or the
    current context) wins, as kubectl merges them."""
    current: str | None = None
    named: dict[str, dict[str, Entry]] = {"context": {}, "cluster": {}, "user": {}}
    for path in paths:
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for kind, entries in named.items():
            for item in config.get(f"{kind}s") or []:
                entries.setdefault(item["name"], _resolved(item.get(kind) or {}, path.parent))
    if not current:
        raise LoginError(f"no current-context in {os.pathsep.join(map(str, paths))}")
    context = _entry(named, "context", current)
    cluster = _entry(named, "cluster", context.get("cluster"))
    user = _entry(named, "user", context.get("user"))
    provider_token = ((user.get("auth-provider") or {}).get("config") or {}).get("access-token")
    return Credentials(
        server=str(cluster["server"]), token=user.get("token") or provider_token, tls=_tls(cluster, user)
    )


def _entry(named: dict[str, dict[str, Entry]], kind: str, name: str | None) -> Entry:
    if name is None or name not in named[kind]:
        raise LoginError(f"the kubeconfig has no {kind} {name!r}")
    return named[kind][name]


def _resolved(entry: Entry, directory: Path) -> Entry:
    return entry | {key: str(directory / entry[key]) for key in _PATHS if entry.get(key)}


def _tls(cluster: Entry, user: Entry) -> ssl.SSLContext | bool:
    if cluster.get("insecure-skip-tls-verify"):
        return False
    authority = cluster.get("certificate-authority-data")
    context = ssl.create_default_context(
        cafile=cluster.get("certificate-authority"),
        cadata=base64.b64decode(authority).decode() if authority else None,
    )
    if user.get("client-certificate") and user.get("client-key"):
        context.load_cert_chain(user["client-certificate"], user["client-key"])
    elif user.get("client-certificate-data") and user.get("client-key-data"):
        # ssl loads client keys only from files: they stay in a private folder for the load.
        with tempfile.TemporaryDirectory() as private:
            cert, key = Path(private) / "client.crt", Path(private) / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            context.load_cert_chain(str(cert), str(key))
    return context
