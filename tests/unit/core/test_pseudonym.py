"""Pseudonyms and the secret behind them: HMAC-SHA256, truncated; the key never in to_env()."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from pydantic import SecretStr

from stream_app.core.config import Settings
from stream_app.core.pseudonym import Pseudonyms, pseudonym, pseudonyms_for

KEY = "unit-test-key-0123456789"


def test_pseudonym_is_truncated_hmac_sha256() -> None:
    want = hmac.new(KEY.encode(), b"u42", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("u42", KEY.encode()) == want and len(want) == 32
    assert pseudonym("u42", b"another-key-0123456") != want
    assert pseudonym("u43", KEY.encode()) != want


def test_settings_keep_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("TRACKER_PSEUDONYMIZE", "true")
    s = Settings()
    assert isinstance(s.pseudonym_key, SecretStr)
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in str(s.to_env())
    assert "TRACKER_PSEUDONYM_KEY" not in s.to_env() and s.to_env()["TRACKER_PSEUDONYMIZE"] == "True"
    assert s.secret_env() == {"TRACKER_PSEUDONYM_KEY": KEY}
    p = pseudonyms_for(s)
    assert p.enabled and KEY not in repr(p)
    assert p.user_key("u42") == pseudonym("u42", KEY.encode()).encode()


def test_pseudonymizing_needs_a_key() -> None:
    with pytest.raises(ValueError, match="TRACKER_PSEUDONYM_KEY"):
        pseudonyms_for(Settings(pseudonymize=True))
    with pytest.raises(ValueError, match="at least 16"):
        pseudonyms_for(Settings(pseudonymize=True, pseudonym_key="short"))
    assert not pseudonyms_for(Settings()).enabled
    assert pseudonyms_for(Settings()).user_key("u42") == b"u42"


def test_rewrite_keeps_every_other_field() -> None:
    value = b'{"event_id":"e","user_id":"u42","item_id":"i","ts":1,"extra":{"a":[1]}}'
    out = orjson.loads(Pseudonyms(KEY.encode()).rewrite_event(value, "p"))
    assert out == {**orjson.loads(value), "user_id": "p"}
    assert Pseudonyms(None).rewrite_event(value, "u42") is value
