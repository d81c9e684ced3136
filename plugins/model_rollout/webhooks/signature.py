"""HMAC verification of MLflow webhook deliveries (pure: no I/O, no clock of its own).

MLflow signs `f"{delivery_id}.{timestamp}.{raw_body}"` with HMAC-SHA256 and sends
`X-MLflow-Signature: v1,<base64 digest>`. We verify over the raw bytes exactly as received
(never a re-serialised JSON), compare in constant time, and accept several secrets so a
secret can be rotated without dropping deliveries signed with the old one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
VERSION = "v1"
TOLERANCE_SECONDS = 300.0  # deliveries older or newer than 5 minutes are refused
MAX_DELIVERY_ID_LENGTH = 128


class SignatureError(ValueError):
    """A delivery that must not be trusted; the message says why (never the secret)."""


def _digest(secret: str, delivery_id: str, timestamp: str, body: bytes) -> bytes:
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow would send for this delivery."""
    return f"{VERSION},{base64.b64encode(_digest(secret, delivery_id, timestamp, body)).decode()}"


def _candidates(header: str) -> list[bytes]:
    """Decoded v1 signatures in a header (space-separated `v1,<b64>` entries, unknown versions skipped)."""
    out = []
    for part in header.split():
        version, _, b64 = part.partition(",")
        if version != VERSION or not b64:
            continue
        try:
            out.append(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def check_timestamp(timestamp: str, now: float, tolerance: float = TOLERANCE_SECONDS) -> float:
    """The delivery's unix time, or SignatureError when absent, malformed or outside the window."""
    try:
        ts = float(timestamp)
    except (TypeError, ValueError):
        raise SignatureError(
            f"{TIMESTAMP_HEADER} must be unix seconds, got {timestamp!r}"
        ) from None
    if ts != ts or abs(now - ts) > tolerance:  # NaN or outside the window
        raise SignatureError(
            f"{TIMESTAMP_HEADER} {timestamp} is outside the {int(tolerance)} s window "
            f"around the receiver's clock"
        )
    return ts


def verify(
    secrets: Iterable[str],
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless some secret signed this delivery within the time window.

    The signature is checked before the timestamp so an unauthenticated caller learns
    nothing about the window.
    """
    if not delivery_id or not timestamp or not signature:
        missing = [
            h
            for h, v in (
                (DELIVERY_ID_HEADER, delivery_id),
                (TIMESTAMP_HEADER, timestamp),
                (SIGNATURE_HEADER, signature),
            )
            if not v
        ]
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if len(delivery_id) > MAX_DELIVERY_ID_LENGTH:
        raise SignatureError(
            f"{DELIVERY_ID_HEADER} longer than {MAX_DELIVERY_ID_LENGTH} characters"
        )
    keys = [s for s in secrets if s]
    if not keys:
        raise SignatureError("no webhook secret configured on the receiver")
    given = _candidates(signature)
    if not given:
        raise SignatureError(f"{SIGNATURE_HEADER} has no '{VERSION},<base64>' signature")
    expected = [_digest(k, delivery_id, timestamp, body) for k in keys]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise SignatureError("signature does not match")
    check_timestamp(timestamp, now, tolerance)
