"""Shared fixtures: the local control plane (started once per session, only when a test needs it)
and a fresh namespace per test."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aima.settings import Settings
from aima_testenv import ControlPlane, ensure_binaries
from aima_testenv.engines import EngineOptions, EngineStats, FakeEngine, failing_models
from aima_testenv.operator import OperatorProcess, OperatorThread
from aima_testenv.processes import interrupt_on_sigterm
from fakes.serving import running_in_thread
from waiting import LOADER_START_SECONDS, eventually


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped by SIGTERM (a timeout, kill) tears its fixtures down as Ctrl-C does, so no
    # control plane or real node outlives it.
    interrupt_on_sigterm()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real control plane with kwok GPU nodes; a start failure fails every test that needs it."""
    with ControlPlane(binaries=ensure_binaries()) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own, deleted afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "crds"


@pytest.fixture(scope="session")
def aima_crds(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with every AIMA CRD applied (server-side, as we document) and Established."""
    return serving_aima_crds(control_plane)


def serving_aima_crds(plane: ControlPlane) -> ControlPlane:
    """Apply every AIMA CRD to ``plane`` and wait until the API server serves them."""
    plane.kubectl("apply", "--server-side", "--field-manager=aima-tests", "-f", str(CRD_DIR))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-l", "app.kubernetes.io/part-of=aima", "crd"
    )
    # Established comes before the storage serves ("storage is (re)initializing", 429): wait for it,
    # so the operator's first lists are not refused and tried again only after a pause.
    kinds = ",".join(sorted(path.name.split(".", 1)[0] for path in CRD_DIR.glob("*.aima.dev.yaml")))
    eventually(
        lambda: plane.kubectl("get", kinds, "-A", check=False).returncode == 0,
        what="the AIMA resources to be served",
    )
    return plane


@pytest.fixture(scope="session")
def fake_gateway() -> Iterator[tuple[FakeEngine, str]]:
    """One fake engine answering for every model, standing in for the gateway the operator's pipeline
    runs call; chat requests for the model `broken` fail with 503, as a crashed engine does."""
    engine = FakeEngine(gateway_options())
    app = engine.app()
    app.middlewares.append(failing_models("broken"))
    with running_in_thread(app) as url:
        yield engine, url


@pytest.fixture
def engine(fake_gateway: tuple[FakeEngine, str]) -> Iterator[FakeEngine]:
    """The session's fake gateway engine, for a test that changes its options or reads its stats;
    both are back to the defaults afterwards, for the tests that share it without asking."""
    engine, _ = fake_gateway
    engine.stats = EngineStats()
    yield engine
    engine.options, engine.stats = gateway_options(), EngineStats()


def gateway_options() -> EngineOptions:
    return EngineOptions(tokens=12)


CLOSED_PORT = "http://127.0.0.1:9"
"""The discard port, closed on test machines: a connection to it is refused at once."""
OFFLINE_SOURCES = {
    "hf_endpoint": CLOSED_PORT,
    "modelscope_endpoint": CLOSED_PORT,
    "ollama_registry": CLOSED_PORT,
    "s3_endpoint": CLOSED_PORT,
}
"""Source endpoints for test operators: sizing a volume from a listing must never reach (or wait
for) the internet; tests that download swap the Job's --endpoint for a local fake."""


@pytest.fixture(scope="session")
def operator(aima_crds: ControlPlane, fake_gateway: tuple[FakeEngine, str]) -> Iterator[OperatorThread]:
    """The real operator, running in this process against the control plane, with quick retries.

    Its pipeline runs call the fake gateway; models no InferenceService serves go straight to it
    (an InferenceService that exists but is not Ready is still waited for)."""
    aima_crds.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac" / "loader-clusterrole.yaml"))
    settings = Settings(
        kubeconfig=aima_crds.kubeconfig,
        catalog_dir=ROOT / "catalog",
        retry_seconds=0.5,
        resync_seconds=30,
        loader_start_seconds=LOADER_START_SECONDS,
        gateway_url=fake_gateway[1],
        pipeline_require_services=False,
        **OFFLINE_SOURCES,
    )
    with OperatorThread(settings) as running:
        yield running


@pytest.fixture(scope="session")
def fake_nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvidia-ml.so.1 (tests/fakes/nvml), built once and loaded into this process, so
    pynvml's own CDLL("libnvidia-ml.so.1") finds it; machines are described per test."""
    from fakes import nvml

    library = nvml.build(tmp_path_factory.mktemp("fake-nvml"))
    nvml.preload(library)
    return library


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[ControlPlane]:
    """A control plane for this test module alone, for tests that install cluster-wide objects of
    their own (the chart's CRDs and ClusterRoles, the kustomize install) without meeting the
    session's; stopped when the module's tests are done."""
    with ControlPlane(binaries=ensure_binaries()) as plane:
        yield plane


@pytest.fixture(scope="module")
def own_aima_crds(own_control_plane: ControlPlane) -> ControlPlane:
    """A control plane of this module's own with the AIMA CRDs and the loader's ClusterRole, for tests
    that run the operator as a process of their own (two operators must never share one)."""
    own_control_plane.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac" / "loader-clusterrole.yaml"))
    return serving_aima_crds(own_control_plane)


@pytest.fixture
def operator_process(own_aima_crds: ControlPlane) -> Callable[[str], OperatorProcess]:
    """Makes the operator, as a process of its own (not started), for one namespace of the module's
    control plane: quick retries, no internet, the catalog's Engines."""

    def make(namespace: str) -> OperatorProcess:
        settings = Settings(
            kubeconfig=own_aima_crds.kubeconfig,
            namespaces=(namespace,),
            catalog_dir=ROOT / "catalog",
            retry_seconds=0.5,
            loader_start_seconds=LOADER_START_SECONDS,
            pipeline_require_services=False,
            **OFFLINE_SOURCES,
        )
        return OperatorProcess(settings, log=own_aima_crds.workdir / "logs" / f"operator-{namespace}.log")

    return make
