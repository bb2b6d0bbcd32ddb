"""Logging in to the API server: a kubeconfig's current context (files relative to it, or inline
base64 data; several files merged as kubectl merges them), the pod's ServiceAccount, or a clear
error when there is neither."""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from aima.kube import auth
from aima_testenv import pki

pytestmark = pytest.mark.unit

SERVER = "https://127.0.0.1:6443"


def kubeconfig(path: Path, *, cluster: dict[str, Any], user: dict[str, Any], current: bool = True) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
    }
    if current:
        config["current-context"] = "local"
    path.write_text(yaml.safe_dump(config))
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def authorities(tls: ssl.SSLContext | bool) -> int:
    """How many CAs ``tls`` trusts (the system's are not loaded where a CA is given)."""
    assert isinstance(tls, ssl.SSLContext)
    return len(tls.get_ca_certs())


def test_a_client_certificate_named_by_paths_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    pki.generate(tmp_path / "pki")
    path = kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority": "pki/ca.crt"},
        user={"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"},
    )
    credentials = auth.login(path)
    assert credentials.server == SERVER and credentials.token is None
    assert authorities(credentials.tls) == 1


def test_a_client_certificate_given_inline(tmp_path: Path) -> None:
    files = pki.generate(tmp_path / "pki")
    path = kubeconfig(
        tmp_path / "config",
        cluster={"server": SERVER, "certificate-authority-data": b64(files.ca_cert)},
        user={"client-certificate-data": b64(files.admin_cert), "client-key-data": b64(files.admin_key)},
    )
    assert authorities(auth.login(path).tls) == 1


def test_kubeconfigs_are_merged_the_first_naming_an_entry_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(
        tmp_path / "first", cluster={"server": SERVER, "insecure-skip-tls-verify": True}, user={"token": "t1"}
    )
    second = kubeconfig(
        tmp_path / "second", cluster={"server": "https://elsewhere"}, user={"token": "t2"}, current=False
    )
    monkeypatch.setattr(auth, "SERVICE_ACCOUNT", tmp_path / "no-service-account")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, (second, first))))
    credentials = auth.login()
    assert (credentials.server, credentials.token) == ("https://elsewhere", "t2")
    assert isinstance(credentials.tls, ssl.SSLContext)
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, (first, second))))
    credentials = auth.login()
    assert (credentials.server, credentials.token, credentials.tls) == (SERVER, "t1", False)


def test_the_pods_service_account_comes_before_any_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = pki.generate(tmp_path / "pki")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token\n")
    (account / "ca.crt").write_bytes(files.ca_cert.read_bytes())
    monkeypatch.setattr(auth, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig(tmp_path / "config", cluster={"server": SERVER}, user={}))
    )
    credentials = auth.login()
    assert (credentials.server, credentials.token) == (auth.IN_CLUSTER_SERVER, "sa-token")
    assert authorities(credentials.tls) == 1


def test_nothing_to_log_in_with_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "SERVICE_ACCOUNT", tmp_path / "no-service-account")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(auth.LoginError, match="no ServiceAccount token and no kubeconfig"):
        auth.login()
    no_context = kubeconfig(tmp_path / "config", cluster={"server": SERVER}, user={}, current=False)
    with pytest.raises(auth.LoginError, match="no current-context"):
        auth.login(no_context)
