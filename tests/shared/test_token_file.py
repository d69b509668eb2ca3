"""``--nats-token-file``: the token is read at every (re)connect, since the kubelet rotates a projected
ServiceAccount token in place; a missing file is an empty token (refused, retried), never a crash."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kubenetmon.shared.broker.connection import ConnectionEvents, connect_options
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import NatsSettings


def test_the_token_is_read_again_at_each_connect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    settings = replace(NatsSettings(), token_file=str(path))
    options = connect_options(settings, name="t", events=ConnectionEvents("t"), inbox="_INBOX_x.y")
    read = options["token"]
    assert read() == "first-token" and options["inbox_prefix"] == "_INBOX_x.y"
    path.write_text("rotated-token")
    assert read() == "rotated-token"
    path.unlink()
    assert read() == ""
    assert "cannot read the NATS token file" in caplog.text and "rotated-token" not in caplog.text


def test_an_unreadable_token_file_or_two_tokens_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--nats-token-file"):
        absent = replace(NatsSettings(), token_file=str(tmp_path / "absent"))
        connect_options(absent, name="t", events=ConnectionEvents("t"))
    with pytest.raises(ConfigError, match="token"):
        NatsSettings(token="x", token_file=str(tmp_path / "t"))
