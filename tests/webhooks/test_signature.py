"""HMAC verification against MLflow's own signer: what MLflow signs, we accept; nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_rollout.webhooks.signature import (
    TOLERANCE_SECONDS,
    SignatureError,
    check_timestamp,
    sign,
    verify,
)

NOW = 1_800_000_000.0
DELIVERY = "0b7c6d1e-8f0a-4c55-9a53-3e4d2a1b9f00"
BODY = b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}'


def _verify(secrets=("s3cret",), **kw):
    args = {
        "delivery_id": DELIVERY,
        "timestamp": str(int(NOW)),
        "signature": sign("s3cret", DELIVERY, str(int(NOW)), BODY),
        "body": BODY,
        "now": NOW,
    }
    args.update(kw)
    verify(list(secrets), **args)


def test_accepts_what_mlflow_signs():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    ts = str(int(NOW))
    header = _generate_hmac_signature("s3cret", DELIVERY, ts, BODY.decode())
    assert header == sign("s3cret", DELIVERY, ts, BODY)
    _verify(signature=header)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"secrets": ("other",)}, "does not match"),
        ({"body": BODY + b" "}, "does not match"),
        ({"delivery_id": "another-id"}, "does not match"),
        ({"timestamp": str(int(NOW) - 1)}, "does not match"),
        ({"signature": "v2,AAAA"}, "no 'v1,<base64>'"),
        ({"signature": "v1,not base64!"}, "no 'v1,<base64>'"),
        ({"signature": ""}, "missing header"),
        ({"delivery_id": None}, "missing header"),
        ({"timestamp": None}, "missing header"),
        ({"secrets": ()}, "no webhook secret"),
        ({"delivery_id": "x" * 129}, "longer than"),
    ],
)
def test_refuses(change, reason):
    with pytest.raises(SignatureError, match=reason):
        _verify(**change)


def test_rotation_accepts_either_secret_and_multi_signature_headers():
    old = sign("old", DELIVERY, str(int(NOW)), BODY)
    _verify(secrets=("new", "old"), signature=old)
    both = f"{sign('new', DELIVERY, str(int(NOW)), BODY)} {old}"
    _verify(secrets=("old",), signature=both)


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS - 1, TOLERANCE_SECONDS + 1])
def test_signed_but_outside_the_window(skew):
    ts = str(int(NOW + skew))
    with pytest.raises(SignatureError, match="outside the 300 s window"):
        _verify(timestamp=ts, signature=sign("s3cret", DELIVERY, ts, BODY))


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS, 0, TOLERANCE_SECONDS])
def test_window_edges_are_inside(skew):
    assert check_timestamp(str(int(NOW + skew)), NOW) == NOW + skew


@pytest.mark.parametrize("value", ["abc", "nan", ""])
def test_timestamp_must_be_unix_seconds(value):
    with pytest.raises(SignatureError):
        check_timestamp(value, NOW)


@given(body=st.binary(max_size=256), flip=st.integers(min_value=0, max_value=255))
def test_any_change_to_the_body_is_caught(body, flip):
    ts = str(int(NOW))
    header = sign("k", DELIVERY, ts, body)
    verify(["k"], delivery_id=DELIVERY, timestamp=ts, signature=header, body=body, now=NOW)
    tampered = body + bytes([flip]) if not body else bytes([body[0] ^ (flip or 1)]) + body[1:]
    with pytest.raises(SignatureError):
        verify(["k"], delivery_id=DELIVERY, timestamp=ts, signature=header, body=tampered, now=NOW)
