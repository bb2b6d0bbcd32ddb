"""API keys from Secrets, and what each may do.

A key is a Secret labelled ``aima.dev/api-key: "true"`` in the gateway's namespace:
``data.key`` is the token; optional ``data.models`` (comma-separated model ids it may use) and
its limits ``data.requestsPerMinute``, ``data.tokensPerMinute``, ``data.tokensPerDay`` and
``data.modelTokensPerMinute`` (``chat=600,embed=6000``; how they are counted across replicas is
:mod:`aima.gateway.quotas`); and ``data.units`` (``read`` or ``write``), the key's access to the
units door /api/v2, which it has none of without it: a key handed to a chat client cannot delete
services. The Secret's name names the key in metrics and logs; the token itself
is never logged. Tokens are held only as SHA-256 digests, so a lookup is one hash and one dict
access and its timing says nothing about how much of a guess was right.

:class:`KeyStore` is shared with the units HTTP door; besides the Secrets' keys it accepts what its
``review`` callable vouches for (trusted ServiceAccount tokens, :mod:`aima.gateway.identity`). A
request presents its token as every door reads one (:func:`aima.doors.auth.presented_token`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "API_KEY_LABEL",
    "ApiKey",
    "KeyStore",
    "UnitsAccess",
    "key_from_secret",
]

logger = logging.getLogger("aima.gateway.keys")
API_KEY_LABEL = "aima.dev/api-key"
"""Label (value "true") of the Secrets that hold API keys."""

Body = dict[str, Any]


class UnitsAccess(enum.Enum):
    """What a key may do through the units door (/api/v2)."""

    NONE = "none"
    READ = "read"
    """Queries (get, list, status, inference) and watches."""
    WRITE = "write"
    """Every unit, commands included."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a key may do; ``name`` is its Secret's name."""

    name: str
    models: frozenset[str] | None = None
    """Model ids it may use; None allows every model."""
    requests_per_minute: int | None = None
    """Its request limit; None is unlimited (as are the other limits)."""
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    model_tokens_per_minute: tuple[tuple[str, int], ...] = ()
    """Tokens per minute of single models: (model id, limit) pairs."""
    units: UnitsAccess = UnitsAccess.NONE
    """Its access to the units door."""

    def allows(self, model: str) -> bool:
        """Whether the key may use ``model``."""
        return self.models is None or model in self.models


def key_from_secret(body: Body) -> tuple[str, ApiKey] | None:
    """The token and key a labelled Secret declares; None when it is not a (valid) key Secret."""
    meta = body.get("metadata", {})
    if meta.get("labels", {}).get(API_KEY_LABEL) != "true":
        return None
    data = body.get("data") or {}
    try:
        token = _decode(data.get("key"))
        models = _decode(data.get("models"))
        limits = {field: _limit(_decode(data.get(field))) for field in _LIMITS}
        per_model = _per_model(_decode(data.get("modelTokensPerMinute")))
        units = UnitsAccess(_decode(data.get("units")).lower() or "none")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        logger.warning(
            "Secret %s/%s is labelled as an API key but unreadable", meta.get("namespace"), meta.get("name")
        )
        return None
    if not token:
        logger.warning(
            "Secret %s/%s is labelled as an API key but has no data.key",
            meta.get("namespace"),
            meta.get("name"),
        )
        return None
    allowed = frozenset(m.strip() for m in models.split(",") if m.strip()) if models else None
    return token, ApiKey(
        name=meta["name"],
        models=allowed,
        requests_per_minute=limits["requestsPerMinute"],
        tokens_per_minute=limits["tokensPerMinute"],
        tokens_per_day=limits["tokensPerDay"],
        model_tokens_per_minute=per_model,
        units=units,
    )


_LIMITS = ("requestsPerMinute", "tokensPerMinute", "tokensPerDay")


def _limit(text: str) -> int | None:
    if not text:
        return None
    if (limit := int(text)) < 0:
        raise ValueError(f"a negative limit: {limit}")
    return limit


def _per_model(text: str) -> tuple[tuple[str, int], ...]:
    """``chat=600, embed=6000`` as pairs."""
    pairs = []
    for item in (i.strip() for i in text.split(",")):
        if item:
            model, _, value = item.rpartition("=")
            if not model.strip() or (limit := _limit(value.strip())) is None:
                raise ValueError(f"not model=limit: {item!r}")
            pairs.append((model.strip(), limit))
    return tuple(pairs)


def _decode(value: str | None) -> str:
    return base64.b64decode(value, validate=True).decode().strip() if value else ""


Review = Callable[[str], Awaitable[ApiKey | None]]


class KeyStore:
    """The current keys, looked up by token; tokens that are no key go to ``review`` if given."""

    def __init__(self, keys: Iterable[tuple[str, ApiKey]] = (), *, review: Review | None = None) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        self._pinned: dict[bytes, ApiKey] = {}
        self._review = review
        self.replace(keys)

    def replace(self, keys: Iterable[tuple[str, ApiKey]]) -> None:
        """Swap in a new set of (token, key) pairs; pinned keys stay."""
        self._by_digest = {_digest(token): key for token, key in keys} | self._pinned

    def pin(self, token: str, key: ApiKey) -> None:
        """Add a key of the process's own, which no later ``replace`` removes."""
        self._pinned[_digest(token)] = key
        self._by_digest[_digest(token)] = key

    def verify(self, token: str) -> ApiKey | None:
        """The key ``token`` belongs to, or None."""
        return self._by_digest.get(_digest(token)) if token else None

    async def authenticate(self, token: str) -> ApiKey | None:
        """The key ``token`` is or stands for, or None."""
        key = self.verify(token)
        if key is None and token and self._review is not None:
            key = await self._review(token)
        return key

    def named(self, name: str) -> ApiKey | None:
        """The key whose Secret is ``name`` (a scan: for the rare reads of another key's quotas)."""
        return next((key for key in self._by_digest.values() if key.name == name), None)

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
