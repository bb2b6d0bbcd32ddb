"""ServiceAccount tokens as gateway credentials, so in-cluster callers (the operator's PipelineRuns,
the MCP server) need no shared secret.

A caller presents a projected token whose audience is the gateway's own (`gateway_token_audience`),
so the token is worthless against the API server if it leaks; the gateway asks the API server with a
TokenReview whether it is valid for that audience and names a trusted ServiceAccount. Answers are
cached for a minute by token digest, so a busy caller costs one review a minute, not one a request;
at most a few reviews run at once, so a flood of made-up tokens cannot flood the API server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

from aima.gateway.keys import ApiKey
from aima.kube import KubeClient, KubeError

__all__ = ["ServiceAccountReviewer", "looks_like_jwt"]

logger = logging.getLogger("aima.gateway.identity")
_SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
_CACHE_SECONDS: Final = 60.0
_CACHE_ENTRIES: Final = 1024
_CONCURRENT_REVIEWS: Final = 4


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a JWT's shape (three dot-separated parts), worth a TokenReview."""
    return token.count(".") == 2 and len(token) > 32


class ServiceAccountReviewer:
    """Tokens of the trusted ServiceAccounts (``namespace/name``), reviewed by the API server."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        audience: str,
        trusted: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._audience = audience
        self._trusted = frozenset(trusted)
        self._clock = clock
        self._answers: dict[bytes, tuple[float, ApiKey | None]] = {}
        self._reviews = asyncio.Semaphore(_CONCURRENT_REVIEWS)

    async def review(self, token: str) -> ApiKey | None:
        """The key a trusted ServiceAccount's token stands for (every model), or None."""
        if not self._trusted or not looks_like_jwt(token):
            return None
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._answers.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with self._reviews:
                key = await self._ask(token)
        except KubeError as error:
            # Not remembered: the next request asks again, so a blip of the API server costs one refusal.
            logger.warning("TokenReview failed: %s", error)  # the token itself is never logged
            return None
        if len(self._answers) >= _CACHE_ENTRIES:
            self._answers = {d: a for d, a in self._answers.items() if a[0] > now}
            if len(self._answers) >= _CACHE_ENTRIES:  # still full of live answers: start afresh
                self._answers.clear()
        self._answers[digest] = (now + _CACHE_SECONDS, key)
        return key

    async def _ask(self, token: str) -> ApiKey | None:
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": token, "audiences": [self._audience]},
        }
        answer = await self._kube.create(review)
        status = answer.get("status") or {}
        username = str((status.get("user") or {}).get("username", ""))
        if not status.get("authenticated") or self._audience not in (status.get("audiences") or []):
            return None
        account = username.removeprefix(_SERVICE_ACCOUNT_PREFIX).replace(":", "/", 1)
        if not username.startswith(_SERVICE_ACCOUNT_PREFIX) or account not in self._trusted:
            logger.info("A token of %s was refused: not a trusted ServiceAccount", username)
            return None
        return ApiKey(name=f"serviceaccount:{account}")
