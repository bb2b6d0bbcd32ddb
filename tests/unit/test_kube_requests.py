"""Requests to the API server: whatever a caller names, the request goes to that name's own path, and
a refusal is a KubeError of its status whatever its body."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from aima.kube import KubeClient, KubeError, resources
from fakes.serving import running
from fuzzing import fuzz

pytestmark = pytest.mark.unit

NAMES = st.text(min_size=1).filter(lambda name: name not in (".", ".."))
"""Any name but the two that are path steps themselves (which no object may have)."""


@fuzz(200)
@given(namespace=NAMES, name=NAMES)
def test_a_name_is_one_path_segment_whatever_it_holds(namespace: str, name: str) -> None:
    path = resources.PIPELINE_RUNS.path(namespace=namespace, name=name, subresource="status")
    url = URL("https://api.example:6443" + path)  # as aiohttp reads the URL it is given
    segments = url.raw_path.split("/")
    assert segments[:5] == ["", "apis", "aima.dev", "v1alpha1", "namespaces"]
    assert [unquote(s) for s in segments[5:]] == [namespace, "pipelineruns", name, "status"]
    assert not url.raw_query_string and not url.raw_fragment


@pytest.mark.parametrize("body", ["404 page not found\n", "<html>502 Bad Gateway</html>", ""])
def test_a_refusal_in_plain_text_is_a_kube_error_of_its_status(body: str) -> None:
    async def scenario() -> None:
        async def refuse(request: web.Request) -> web.Response:
            status = 404 if request.path.endswith("/gone") else 502
            return web.Response(status=status, text=body, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/{path:.*}", refuse)
        async with running(app) as url, aiohttp.ClientSession() as session:
            kube = KubeClient(server=url, session=session)
            assert await kube.get(resources.MODELS, name="gone", namespace="ns") is None
            with pytest.raises(KubeError) as refused:
                await kube.get(resources.MODELS, name="other", namespace="ns")
            assert refused.value.status == 502

    asyncio.run(scenario())
