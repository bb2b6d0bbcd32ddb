"""A small async client on aiohttp: get, list, server-side apply, status patch, delete, events.

Why not the `kubernetes` package: it is synchronous, and its import alone would be most of the
operator's memory. Who the client is comes from `aima.kube.auth`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from aima import __version__
from aima.api.common import FIELD_MANAGER
from aima.domain import objects
from aima.kube import auth, resources
from aima.kube.resources import Resource

Body = dict[str, Any]
Items = list[Body]  # spelt here: inside KubeClient, `list` names the method


class KubeError(RuntimeError):
    """The API server refused a request; ``status`` is the HTTP code, ``reason`` its Status reason."""

    def __init__(self, *, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient:
    """Authenticated access to one API server; create it with :func:`connect`."""

    def __init__(self, *, server: str, session: aiohttp.ClientSession) -> None:
        self._server = server.rstrip("/")
        self._session = session

    async def close(self) -> None:
        """Close the connection pool."""
        await self._session.close()

    async def get(self, resource: Resource, *, name: str, namespace: str | None = None) -> Body | None:
        """One object, or None when it does not exist."""
        try:
            return await self._request("GET", resource.path(namespace=namespace, name=name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Body]:
        """All objects of a resource, in one namespace or (namespace None) in all of them."""
        items, _ = await self.list_with_version(resource, namespace=namespace, label_selector=label_selector)
        return items

    async def list_with_version(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[Items, str]:
        """The objects and the list's resourceVersion, from which a watch continues.

        Items of a list carry no apiVersion and kind; they are filled in, so that a listed object
        looks like one read or watched (and compares equal to a desired one).
        """
        params = {"labelSelector": label_selector} if label_selector else None
        listing = await self._request("GET", resource.path(namespace=namespace), params=params)
        items: Items = listing.get("items", [])
        for item in items:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items, str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        bookmarks: bool = False,
    ) -> AsyncGenerator[Body, None]:
        """Watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        With ``bookmarks``, BOOKMARK events carry only a newer resourceVersion to resume from.
        Events may be as large as the objects (megabytes): lines are not limited in length.
        """
        params = {"watch": "true", "allowWatchBookmarks": "true" if bookmarks else "false"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        url = self._server + resource.path(namespace=namespace)
        async with self._session.get(url, params=params, timeout=timeout) as response:
            if response.status >= 400:
                raise KubeError(
                    status=response.status, reason=response.reason or "", message=await response.text()
                )
            try:
                async for line in json_lines(response.content.iter_any()):
                    yield json.loads(line)
            finally:
                # A watch left mid-stream is dropped, not said goodbye to: a TLS close waits for the
                # server's answer, and the loop may be gone by then (the socket would leak).
                if not response.content.at_eof() and response.connection is not None:
                    transport = response.connection.transport
                    if transport is not None:
                        transport.abort()

    async def apply(self, body: Body) -> Body:
        """Server-side apply ``body`` as AIMA's field manager; idempotent."""
        resource = resources.BY_KIND[body["kind"]]
        meta = body["metadata"]
        path = resource.path(namespace=meta.get("namespace"), name=meta["name"])
        return await self._request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            data=json.dumps(body),
            content_type="application/apply-patch+yaml",
        )

    async def apply_if_changed(self, body: Body) -> Body | None:
        """Read the live object, then :meth:`apply_unless_held`; the object written, or None."""
        meta = body["metadata"]
        resource = resources.BY_KIND[body["kind"]]
        current = await self.get(resource, name=meta["name"], namespace=meta.get("namespace"))
        return await self.apply_unless_held(body, current=current)

    async def apply_unless_held(self, body: Body, *, current: Body | None) -> Body | None:
        """Apply ``body`` unless ``current`` (the live object, as last seen) already holds all of it.

        Server-side apply of an unchanged object is still a write request: skipping it keeps a
        steady state free of writes. Returns the object as written, or None when it did not write.
        """
        if current is not None and objects.is_satisfied(body, current):
            return None
        return await self.apply(body)

    async def patch_status(
        self, resource: Resource, *, name: str, namespace: str | None, status: Body
    ) -> Body:
        """Merge-patch the status subresource."""
        return await self._request(
            "PATCH",
            resource.path(namespace=namespace, name=name, subresource="status"),
            data=json.dumps({"status": status}),
            content_type="application/merge-patch+json",
        )

    async def patch(
        self,
        resource: Resource,
        *,
        name: str,
        namespace: str | None,
        patch: Body,
        subresource: str | None = None,
    ) -> Body:
        """Merge-patch an object or its subresource (for users' commands such as scale, and scalers;
        controllers never patch spec)."""
        return await self._request(
            "PATCH",
            resource.path(namespace=namespace, name=name, subresource=subresource),
            data=json.dumps(patch),
            content_type="application/merge-patch+json",
        )

    async def create(self, body: Body) -> Body:
        """Create an object."""
        resource = resources.BY_KIND[body["kind"]]
        return await self._request(
            "POST", resource.path(namespace=body["metadata"].get("namespace")), data=json.dumps(body)
        )

    async def delete(
        self, resource: Resource, *, name: str, namespace: str | None = None, uid: str | None = None
    ) -> None:
        """Delete an object in the background (children follow by garbage collection); gone is fine.

        With ``uid``, only that very object: one made anew under the name meanwhile is refused (409).
        """
        options: Body = {"propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            await self._request(
                "DELETE", resource.path(namespace=namespace, name=name), data=json.dumps(options)
            )
        except KubeError as error:
            if error.status != 404:
                raise

    async def event(self, *, regarding: Body, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about an object (shown by ``kubectl describe``)."""
        meta = regarding["metadata"]
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        await self.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "generateName": f"{meta['name']}.",
                    "namespace": meta.get("namespace") or "default",
                },
                "involvedObject": {
                    "apiVersion": regarding["apiVersion"],
                    "kind": regarding["kind"],
                    "name": meta["name"],
                    "namespace": meta.get("namespace"),
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "source": {"component": "aima-operator"},
                "reportingComponent": "aima-operator",
            }
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: str | None = None,
        content_type: str = "application/json",
    ) -> Body:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        async with self._session.request(
            method, self._server + path, params=params, data=data, headers=headers
        ) as r:
            if r.status >= 400:
                raise await _refusal(r)
            payload = await r.json(content_type=None) if r.content_length != 0 else {}
            result: Body = payload
            return result


async def _refusal(response: aiohttp.ClientResponse) -> KubeError:
    """The error for a refusal, from the API server's Status object; a refusal in plain text (from the
    API server's own mux, or a proxy in front of it) is still a KubeError of its HTTP status."""
    try:
        status = await response.json(content_type=None)
    except ValueError:
        status = None
    status = status if isinstance(status, dict) else {}
    return KubeError(
        status=response.status,
        reason=str(status.get("reason", response.reason)),
        message=str(status.get("message", "")),
    )


async def json_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a byte stream, however long.

    aiohttp's own line reader refuses lines over 128 KiB (LineTooLong), and one watch event is one
    line: a large ConfigMap or a Model with a long manifest would end every watch of its kind.
    """
    pending = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            if pending.strip():
                yield bytes(pending)
            pending.clear()
            start = end + 1
        pending += chunk[start:]
    if pending.strip():
        yield bytes(pending)


async def connect(*, kubeconfig: Path | None = None) -> KubeClient:
    """A client logged in by :func:`aima.kube.auth.login`: as ``kubeconfig`` says, else as the pod's
    ServiceAccount, else as kubectl's kubeconfig."""
    credentials = auth.login(kubeconfig)
    # A user agent of our own tells AIMA's requests apart in the API server's audit log.
    headers = {"User-Agent": f"aima/{__version__}"}
    headers |= {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}
    connector = aiohttp.TCPConnector(ssl=credentials.tls, limit=64)
    session = aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
    )
    return KubeClient(server=credentials.server, session=session)
