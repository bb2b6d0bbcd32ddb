"""What a notification looks like on the wire (pure): the JSON of a Webhook channel with its HMAC
signature headers, and the `{"text": ...}` of a Slack-compatible one.

Signing follows the scheme Stripe and Slack use: the signature covers a timestamp and the body,
`HMAC-SHA256(key, timestamp + "." + body)`, so a receiver can reject replays of old requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime

from aima.api.alert import AlertState, ChannelType, Severity
from aima.domain.alert import Notification

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "request_for", "sign", "verify"]

SIGNATURE_HEADER = "X-AIMA-Signature"
TIMESTAMP_HEADER = "X-AIMA-Timestamp"
ID_HEADER = "X-AIMA-Alert-Id"
"""Same for every retry of one notification, so receivers can drop duplicates."""

_ICONS = {
    Severity.INFO: ":information_source:",
    Severity.WARNING: ":warning:",
    Severity.CRITICAL: ":rotating_light:",
}


def sign(key: bytes, *, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(key: bytes, *, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ours for this body and timestamp (for receivers and tests)."""
    return hmac.compare_digest(sign(key, timestamp=timestamp, body=body), signature)


def request_for(
    channel_type: ChannelType,
    notification: Notification,
    *,
    rule: str,
    namespace: str,
    severity: Severity,
    description: str | None,
    signing_key: bytes | None,
    now: datetime,
) -> tuple[bytes, Mapping[str, str]]:
    """The body and headers of one notification to one channel."""
    alert_id = _alert_id(namespace, rule, notification)
    if channel_type is ChannelType.SLACK:
        body = json.dumps({"text": _text(notification, rule=rule, namespace=namespace, severity=severity,
                                         description=description)}).encode()  # fmt: skip
        return body, {"Content-Type": "application/json"}
    body = json.dumps(
        {
            "id": alert_id,
            "rule": rule,
            "namespace": namespace,
            "severity": str(severity),
            "state": str(notification.state),
            "subject": notification.subject,
            "message": notification.message,
            "value": notification.value,
            "description": description,
            "since": notification.since.isoformat(),
            "firedAt": notification.fired_at.isoformat() if notification.fired_at else None,
            "sentAt": now.isoformat(),
        },
        sort_keys=True,
    ).encode()
    headers = {"Content-Type": "application/json", ID_HEADER: alert_id}
    if signing_key is not None:
        timestamp = str(int(now.timestamp()))
        headers |= {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(signing_key, timestamp=timestamp, body=body),
        }
    return body, headers


def _alert_id(namespace: str, rule: str, notification: Notification) -> str:
    fired = notification.fired_at.isoformat() if notification.fired_at else ""
    seed = f"{namespace}/{rule}/{notification.subject}/{fired}/{notification.state}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _text(
    notification: Notification, *, rule: str, namespace: str, severity: Severity, description: str | None
) -> str:
    head = (
        f":white_check_mark: Resolved: {notification.subject}"
        if notification.state is AlertState.RESOLVED
        else f"{_ICONS[severity]} [{severity}] {notification.subject}"
    )
    lines = [f"{head} (AlertRule {namespace}/{rule})", notification.message]
    if description:
        lines.append(description)
    return "\n".join(lines)
