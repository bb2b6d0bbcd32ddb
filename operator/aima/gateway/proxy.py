"""The OpenAI-compatible request handlers: authenticate, route by ``model``, forward, stream back.

The hot path reads the body once (the ``model`` field is all it parses), forwards the same bytes
through one shared aiohttp connection pool, and passes a streamed reply (Server-Sent Events,
audio) through chunk by chunk as it arrives. A replica that refuses the connection is replaced by
another; a client that goes away ends the upstream request (the server must run with
``handler_cancellation=True``, as ``aima gateway serve`` does, to notice it before the first byte).
A streamed request held while its service scales from zero has its reply started already
(:mod:`aima.gateway.holding`): the replica's stream goes into it the same way, and an error, or a
reply of the replica that is not a stream, becomes its last event.

A key with limits is admitted against its quotas once its model is known, and charged the usage its
reply reports (:mod:`aima.gateway.quotas`). Every response carries ``X-Request-ID`` (the client's,
when it sent a sane one, else a new one; the replica is sent the same), and the replies to a key with
limits carry OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aima.doors.auth import presented_token
from aima.gateway import bodies, holding
from aima.gateway.balancer import Balancer
from aima.gateway.errors import GatewayError, upstream_error
from aima.gateway.keys import ApiKey, KeyStore, UnitsAccess
from aima.gateway.metrics import GatewayMetrics, usage_tokens
from aima.gateway.quotas import Admission, Quotas, StoreError, estimate
from aima.gateway.replies import ModelRename
from aima.gateway.rollout_guard import Judge, halt
from aima.gateway.routes import LISTING_LAG_SECONDS, Backend, Routes, pick
from aima.gateway.scaling import Waker
from aima.kube import KubeClient

__all__ = ["GET_ROUTES", "POST_ROUTES", "Proxy", "ProxyOptions", "request_id", "stamp_response"]

logger = logging.getLogger("aima.gateway.proxy")

POST_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
    "/v1/rerank",
)
"""Paths forwarded to the replica as they are."""
GET_ROUTES = ("/v1/audio/voices",)
"""Paths whose GET is forwarded, routed by the ``model`` query parameter (speech engines' voices)."""
_CHAT = "/v1/chat/completions"
# Hop-by-hop headers (RFC 9110 7.6.1), the client's credentials (the engines never see gateway keys),
# what aiohttp sets itself, and X-Request-ID (``_exchange`` sends the request's own).
_DROP_REQUEST = frozenset(
    {"host", "authorization", "x-api-key", "content-length", "connection", "keep-alive", "transfer-encoding",
     "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection", "expect", "x-request-id"}
)  # fmt: skip
_DROP_RESPONSE = frozenset(
    {
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "trailer",
        "upgrade",
        "date",
        "server",
    }
)
_BUFFERED_REPLY_BYTES = 2**20
"""A reply with a Content-Length up to this is read whole and sent in one write; others stream."""
_MOST_UNANSWERED = 3
"""Tries of one request that replicas may close unanswered before it is a 502 (each one twice at most)."""
_SUCCESSOR_POLL_SECONDS = 0.1
_SAME_REPLICA_PAUSE_SECONDS = 0.05
_RENAMED_TYPES = frozenset({"application/json", "text/event-stream"})
"""Replies whose ``"model"`` fields name the model (the others are audio)."""
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
"""A client's X-Request-ID that is passed on (others are replaced, so logs get no odd bytes)."""
_REQUEST_ID = web.RequestKey("request_id", str)
_KEY = web.RequestKey("api_key", ApiKey)
_ADMISSION = web.RequestKey("admission", Admission)
_SERVED_BY = web.RequestKey("served_by", str)
"""The InferenceService (namespace/name) whose replicas took the request."""
_FIRST_BYTE = web.RequestKey("first_byte", float)
"""Seconds from the request to the first byte of its streamed reply."""
_SPLIT = web.RequestKey("split", tuple)
"""For a request to a split model id: the backend asked for and the one that took it."""


@dataclass(frozen=True, kw_only=True)
class ProxyOptions:
    """The knobs of the proxy path (from ``Settings.gateway_*``)."""

    max_body_bytes: int = 64 * 2**20
    prefix_affinity: bool = False
    affinity_prefix_chars: int = 512
    retry_after_seconds: float = 10.0


class Proxy:
    """Everything a request needs, shared by all requests of one gateway process."""

    def __init__(
        self,
        *,
        routes: Routes,
        keys: KeyStore | None,
        quotas: Quotas,
        session: aiohttp.ClientSession,
        waker: Waker,
        metrics: GatewayMetrics,
        balancer: Balancer,
        options: ProxyOptions,
        kube: KubeClient | None = None,
    ) -> None:
        self.routes, self.keys, self.quotas, self.metrics = routes, keys, quotas, metrics
        self._session, self._waker, self._balancer, self._options = session, waker, balancer, options
        self._kube = kube
        self._judge_state = Judge()
        self._halting: set[asyncio.Task[None]] = set()  # held until done: the loop keeps weak references

    # -- handlers --------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the services this key may use, scaled to zero or not."""
        try:
            key = await self._authenticate(request)
        except GatewayError as error:
            return error.response()
        data = [_model_object(b) for b in self.routes.backends() if key is None or key.allows(b.model)]
        return web.json_response({"object": "list", "data": sorted(data, key=lambda m: str(m["id"]))})

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model}."""
        try:
            key = await self._authenticate(request)
            backend = self._backend(request.match_info["model"], key)
        except GatewayError as error:
            return error.response()
        return web.json_response(_model_object(backend))

    async def standing(self, request: web.Request) -> web.Response:
        """GET /v1/quotas: the presenting key's limits and what is used of each window, across every
        replica when they share Redis; ``?key=<name>`` reads another key's, for a key that may use
        the units door."""
        try:
            key = await self._authenticate(request)
            if key is None or self.keys is None:
                raise GatewayError(404, "This gateway takes no API keys: it meters none", code="no_api_keys")
            if (name := request.query.get("key", key.name)) != key.name:
                if key.units is UnitsAccess.NONE:
                    raise GatewayError(
                        403, "Another key's quotas need a key with data.units", code="permission_denied"
                    )
                if (other := self.keys.named(name)) is None:
                    raise GatewayError(
                        404, f"No API key is named '{name}'", code="key_not_found", param="key"
                    )
                key = other
            windows = await self.quotas.standing(key)
        except GatewayError as error:
            return error.response()
        except StoreError as error:
            logger.warning("The quota store could not be read: %s", error)
            return GatewayError(
                503, "The quota store cannot be reached", code="quota_store_unavailable"
            ).response()
        return web.json_response({"key": key.name, "windows": windows})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/... (or GET of GET_ROUTES): route by ``model`` and pass the exchange through."""
        started = time.perf_counter()
        label, status = "", 500
        try:
            key = await self._authenticate(request)
            body = await self._read(request)
            model, payload = self._model_of(request, body)
            asked = self._backend(model, key)
            label = asked.model
            await self._admit(request, key, asked.model, payload, body)
            backend = self._serving(request, asked)
            rename = None
            if model != backend.upstream_model and request.method != "GET":
                body = self._renamed(request, body, payload, backend.upstream_model)
                rename = ModelRename(served=backend.upstream_model, asked=model)
            # In flight to the service that takes it: what that service's autoscaling counts.
            self.metrics.in_flight[backend.model] += 1
            try:
                endpoints = await self._waker.endpoints(backend, request=request, payload=payload)
                response = await self._send(
                    request,
                    body,
                    endpoints,
                    label=label,
                    payload=payload,
                    rename=rename,
                    started=started,
                    backend=backend,
                )
            finally:
                self.metrics.in_flight[backend.model] -= 1
            status = 499 if _client_gone(request) else response.status
            return response
        except GatewayError as error:
            status = error.status
            if (held := holding.held_stream(request)) is not None:
                return await held.fail(error)  # its status line is gone: the error is its last event
            return error.response()
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # the client went away (nginx's code for it)
            raise
        finally:
            if (admission := request.get(_ADMISSION)) is not None:
                await self.quotas.settle(admission, 0)  # no reply used tokens (a settled one stays)
            self.metrics.finish(
                model=label, route=request.path, code=status, seconds=time.perf_counter() - started
            )
            if (split := request.get(_SPLIT)) is not None:
                self._judge(request, *split, status=status)

    # -- steps -----------------------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> ApiKey | None:
        if self.keys is None:
            return None
        token = presented_token(request.headers)
        if not token:
            raise GatewayError(
                401, "Missing API key: send Authorization: Bearer <key>", code="missing_api_key"
            )
        key = await self.keys.authenticate(token)
        if key is None:
            raise GatewayError(401, "Incorrect API key provided", code="invalid_api_key")
        request[_KEY] = key
        return key

    async def _admit(
        self,
        request: web.Request,
        key: ApiKey | None,
        model: str,
        payload: dict[str, Any] | None,
        body: bytes,
    ) -> None:
        """Reserve the request against ``key``'s quotas, or refuse it (429)."""
        if key is None:
            return
        tokens = estimate(payload, body_bytes=len(body), reserve_tokens=self.quotas.reserve_tokens)
        request[_ADMISSION] = admission = await self.quotas.admit(key, model=model, tokens=tokens)
        if (spent := admission.spent) is not None:
            self.metrics.rate_limited[(key.name, spent.kind.value)] += 1
            raise GatewayError(
                429, admission.refusal, code="rate_limit_exceeded", retry_after=admission.retry_after
            )

    async def _charge(
        self, request: web.Request, label: str, usage: tuple[int, int] | None, *, keep: bool
    ) -> None:
        """Count the tokens a reply reported, and settle its reservation with them; without usage the
        reservation is kept (``keep``) or released."""
        key = request.get(_KEY)
        if usage is not None:
            self.metrics.count_usage(label, usage, key=None if key is None else key.name)
        if (admission := request.get(_ADMISSION)) is not None:
            await self.quotas.settle(admission, sum(usage) if usage is not None else None if keep else 0)

    async def _read(self, request: web.Request) -> bytes:
        limit = self._options.max_body_bytes
        length = request.content_length
        if length is not None:
            if length > limit:
                raise _too_large(limit)
            try:
                return await request.content.readexactly(length)
            except asyncio.IncompleteReadError:
                raise GatewayError(400, "The body ended early", code="invalid_body") from None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _model_of(self, request: web.Request, body: bytes) -> tuple[str, dict[str, Any] | None]:
        if request.method == "GET":
            if not (model := request.query.get("model", "")):
                raise GatewayError(
                    400, "Name the model: ?model=<id>", code="missing_required_parameter", param="model"
                )
            return model, None
        if request.content_type == "multipart/form-data":
            return bodies.multipart_field(body, request.headers.get("Content-Type", ""), "model"), None
        return bodies.json_model(body)

    @staticmethod
    def _renamed(request: web.Request, body: bytes, payload: dict[str, Any] | None, model: str) -> bytes:
        """The body naming ``model``, the name the engine serves (vLLM refuses any other, in an
        audio upload's form as in JSON)."""
        if payload is not None:
            return bodies.with_model(payload, model)
        return bodies.with_multipart_field(body, request.headers.get("Content-Type", ""), "model", model)

    def _backend(self, model: str, key: ApiKey | None) -> Backend:
        backend = self.routes.lookup(model)
        if backend is None:
            raise GatewayError(
                404, f"The model '{model}' does not exist", code="model_not_found", param="model"
            )
        if key is not None and not (key.allows(model) or key.allows(backend.model)):
            raise GatewayError(
                403, f"This API key may not use the model '{model}'", code="model_not_allowed", param="model"
            )
        return backend

    def _current_endpoints(self, backend: Backend) -> tuple[str, ...]:
        """``backend``'s ready replicas as the routing table lists them now."""
        found = self.routes.lookup(backend.model)
        return found.endpoints if found is not None and not found.split else backend.endpoints

    def _serving(self, request: web.Request, asked: Backend) -> Backend:
        """The backend that takes this request (a traffic split's target, by weight), named in the
        reply's X-AIMA-Service header and, for a split, counted per target."""
        backend = pick(asked, random.random())  # noqa: S311 - a share of requests, not a secret
        request[_SERVED_BY] = f"{backend.service.namespace}/{backend.service.name}"
        if asked.split:
            self.metrics.split_requests[(asked.model, backend.service.name)] += 1
            request[_SPLIT] = (asked, backend)
        return backend

    def _judge(self, request: web.Request, asked: Backend, served: Backend, *, status: int) -> None:
        """Count a split request towards its target's rollout guard; write a halt it completes."""
        found = self._judge_state.record(
            asked, served, failed=status >= 500, first_byte=request.get(_FIRST_BYTE)
        )
        if found is not None and self._kube is not None:
            task = asyncio.create_task(halt(self._kube, found), name=f"halt-{found.service}")
            self._halting.add(task)
            task.add_done_callback(self._halting.discard)

    async def _send(
        self,
        request: web.Request,
        body: bytes,
        endpoints: tuple[str, ...],
        *,
        label: str,
        payload: dict[str, Any] | None,
        rename: ModelRename | None,
        started: float,
        backend: Backend,
    ) -> web.StreamResponse:
        """Send the request to a replica of ``endpoints`` (``backend``'s when the request came; where
        they all refused it or left it unanswered, those the routing table lists by then)."""
        affinity = None
        if self._options.prefix_affinity and payload is not None and request.path == _CHAT:
            affinity = bodies.affinity_key(payload, chars=self._options.affinity_prefix_chars)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        tried: list[str] = []
        unanswered: Counter[str] = Counter()
        failure: GatewayError | None = None  # the 502 of the last unanswered try, if any
        looked_again = False
        while True:
            endpoint = self._balancer.pick(endpoints, exclude=tried, affinity=affinity)
            if endpoint is None and tried and not looked_again:
                # Every listed replica refused the request or left it unanswered. A replica stops
                # once its successor is Ready, and the table may list that one only a moment after
                # the request came in: look again, once, before giving up.
                looked_again = True
                endpoints = await self._successors(backend, tried)
                endpoint = self._balancer.pick(endpoints, exclude=tried, affinity=affinity)
            if endpoint is None:
                raise failure or GatewayError(
                    503,
                    f"No replica of the model '{label}' accepted a connection",
                    code="upstream_unreachable",
                    retry_after=self._options.retry_after_seconds,
                )
            self._balancer.acquire(endpoint)
            try:
                return await self._exchange(
                    request, endpoint, body, headers, label=label, rename=rename, started=started
                )
            except aiohttp.ClientConnectorError as error:
                # Nothing was sent: another replica may take the request.
                logger.warning("Could not connect to %s for %s: %s", endpoint, label, error.os_error)
                tried.append(endpoint)
                self._balancer.failed(endpoint)
                self.metrics.retries[label] += 1
            except _Unanswered as error:
                # A kept-alive connection the engine closed as the request went out (its idle timeout,
                # or its exit before its endpoint left the routes): nothing came back, so once more on
                # a new connection, to another replica where there is one. A replica that does it
                # twice is stopping, and a request all of them left unanswered is a 502.
                failure = _replica_failed(label, error)
                unanswered[endpoint] += 1
                if sum(unanswered.values()) >= _MOST_UNANSWERED:
                    raise failure from None
                others = [e for e in endpoints if e != endpoint and e not in tried]
                if others or unanswered[endpoint] > 1:
                    tried.append(endpoint)
                else:
                    # Once more to the same replica: an engine that closed one idle connection has
                    # likely closed the pool's others too; a moment lets their closing be seen, so
                    # the pool opens a new connection rather than hand out another closed one.
                    await asyncio.sleep(_SAME_REPLICA_PAUSE_SECONDS)
                logger.info(
                    "Replica %s of %s closed the connection unanswered (%s); once more",
                    endpoint,
                    label,
                    error,
                )
                self.metrics.retries[label] += 1
            except aiohttp.ClientError as error:
                logger.warning("Replica %s of %s failed: %s", endpoint, label, error)
                raise _replica_failed(label, error) from None
            finally:
                self._balancer.release(endpoint)

    async def _successors(self, backend: Backend, tried: list[str]) -> tuple[str, ...]:
        """``backend``'s replicas as the routing table lists them, once it lists one not ``tried``
        (polled for up to ``LISTING_LAG_SECONDS``); () when none came."""
        deadline = time.monotonic() + LISTING_LAG_SECONDS
        while True:
            if set(listed := self._current_endpoints(backend)) - set(tried):
                return listed
            if time.monotonic() >= deadline:
                return ()
            await asyncio.sleep(_SUCCESSOR_POLL_SECONDS)

    async def _exchange(
        self,
        request: web.Request,
        endpoint: str,
        body: bytes,
        headers: dict[str, str],
        *,
        label: str,
        rename: ModelRename | None,
        started: float,
    ) -> web.StreamResponse:
        headers["X-Request-ID"] = request_id(request)
        try:
            sent = await self._session.request(
                request.method, endpoint + request.path_qs, data=body or None, headers=headers
            )
        except aiohttp.ClientConnectorError:
            raise
        except aiohttp.ServerTimeoutError:
            raise  # the replica has the request and is slow: another try would run it twice
        except aiohttp.ClientConnectionError as error:
            # Disconnected, reset, or "Cannot write to closing transport": no reply came.
            raise _Unanswered(str(error)) from error
        async with sent as upstream:
            if (held := holding.held_stream(request)) is not None:
                # Its 200 and SSE head are sent: only a stream may follow, an error goes in as an event.
                if upstream.status != 200 or upstream.content_type != "text/event-stream":
                    raise upstream_error(upstream.status, await upstream.read(), label=label)
                held.stop()
                return await self._stream(
                    request, upstream, held.response, label=label, rename=rename, started=started
                )
            reply_headers = _reply_headers(upstream.headers)
            if rename is not None and upstream.content_type not in _RENAMED_TYPES:  # audio: untouched
                rename = None
            length = upstream.content_length
            if length is not None and length <= _BUFFERED_REPLY_BYTES:
                data = await upstream.read()
                await self._charge(
                    request, label, usage_tokens(data) if upstream.status == 200 else None, keep=False
                )
                if rename is not None:
                    data = rename.feed(data) + rename.flush()
                return web.Response(status=upstream.status, body=data, headers=reply_headers)
            response = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await response.prepare(request)
            return await self._stream(
                request, upstream, response, label=label, rename=rename, started=started
            )

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        *,
        label: str,
        rename: ModelRename | None,
        started: float,
    ) -> web.StreamResponse:
        """Pass ``upstream``'s body through into the prepared ``response`` and charge its usage."""
        usage = None
        # A stream of text without usage (the client did not ask for it) keeps its reservation.
        keep = upstream.status == 200 and upstream.content_type == "text/event-stream"
        first = True
        try:
            async for chunk in upstream.content.iter_any():
                if first:
                    request[_FIRST_BYTE] = time.perf_counter() - started
                    self.metrics.first_byte.observe((label, request.path), request[_FIRST_BYTE])
                    first = False
                usage = usage_tokens(chunk) or usage
                await response.write(chunk if rename is None else rename.feed(chunk))
        except ConnectionResetError:
            await self._charge(request, label, usage, keep=keep)
            return response  # the client left; leaving the block closes the upstream connection
        except aiohttp.ClientError as error:
            # The headers are gone already, so the client can only be told by a broken connection:
            # ending the reply properly would pass a cut-off answer for a whole one.
            logger.warning("Replica of %s broke off a streamed reply: %s", label, error)
            if request.transport is not None:
                request.transport.close()
            await self._charge(request, label, usage, keep=keep)
            return response
        await self._charge(request, label, usage, keep=keep)
        await response.write_eof(b"" if rename is None else rename.flush())
        return response


def _replica_failed(label: str, error: Exception) -> GatewayError:
    return GatewayError(502, f"The replica of '{label}' failed: {error}", code="upstream_error")


class _Unanswered(Exception):
    """The replica closed the connection before any reply to the request."""


def request_id(request: web.Request) -> str:
    """The request's X-Request-ID: the client's when it is sane, else a new one (``req_`` and 32 hex
    digits, as OpenAI's)."""
    if (found := request.get(_REQUEST_ID)) is None:
        sent = request.headers.get("X-Request-ID", "")
        found = sent if _SANE_REQUEST_ID.fullmatch(sent) else f"req_{uuid.uuid4().hex}"
        request[_REQUEST_ID] = found
    return found


async def stamp_response(request: web.Request, response: web.StreamResponse) -> None:
    """Before any response's headers go out (errors too): its X-Request-ID and x-ratelimit-* headers."""
    response.headers["X-Request-ID"] = request_id(request)
    if (served_by := request.get(_SERVED_BY)) is not None:
        response.headers["X-AIMA-Service"] = served_by
    if (admission := request.get(_ADMISSION)) is not None:
        response.headers.update(admission.headers)


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _reply_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in _DROP_RESPONSE)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The body is larger than {limit} bytes", code="body_too_large")


def _model_object(backend: Backend) -> dict[str, Any]:
    found = {"id": backend.model, "object": "model", "created": backend.service.created, "owned_by": "aima"}
    if backend.adapter is not None:  # as vLLM lists an adapter: its base model is its parent
        found["parent"] = backend.model.removesuffix(f":{backend.adapter}")
    return found
