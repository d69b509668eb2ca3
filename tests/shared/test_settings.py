"""Settings: flags and ``KUBENETMON_*`` variables become validated frozen dataclasses, with clear errors."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.shared import options
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import (
    ALL_SETTINGS,
    HttpSettings,
    LogSettings,
    NatsSettings,
    PoolSettings,
    RuntimeSettings,
    add_http_arguments,
    add_log_arguments,
    add_nats_arguments,
    add_pool_arguments,
    add_runtime_arguments,
    http_settings,
    nats_settings,
    pool_settings,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    for add in (
        add_nats_arguments,
        add_log_arguments,
        add_http_arguments,
        add_runtime_arguments,
        add_pool_arguments,
    ):
        add(p)
    return p


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    p = parser()
    cli.apply_env_defaults(p, environ or {})
    return p.parse_args(argv)


def test_defaults_need_no_flags() -> None:
    args = parse([])
    assert nats_settings(args) == NatsSettings()
    assert http_settings(args) == HttpSettings()
    assert pool_settings(args) == PoolSettings()


def test_flags_are_parsed_with_units() -> None:
    args = parse(
        [
            "--nats-url=nats://a:4222,tls://b:4223",
            "--nats-raw-max-age=36h",
            "--nats-raw-max-bytes=10GiB",
            "--nats-backoff=500ms,2s,1m",
            "--nats-ack-wait=45",
            "--workers=4",
        ]
    )
    s = nats_settings(args)
    assert s.urls == ("nats://a:4222", "tls://b:4223")
    assert s.raw_max_age_s == 36 * 3600
    assert s.raw_max_bytes == 10 * 1024**3
    assert s.backoff_s == (0.5, 2.0, 60.0)
    assert s.ack_wait_s == 45.0
    assert pool_settings(args).workers == 4


def test_environment_supplies_defaults_and_flags_win() -> None:
    env = {
        "KUBENETMON_NATS_URL": "nats://env:1",
        "KUBENETMON_NATS_MAX_DELIVER": "7",
        "KUBENETMON_LOG_FORMAT": "text",
    }
    args = parse(["--nats-max-deliver=9"], env)
    s = nats_settings(args)
    assert s.urls == ("nats://env:1",)
    assert s.max_deliver == 9
    assert options.from_args(LogSettings, args).format == "text"


def test_whole_command_line_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBENETMON_NATS_REPLICAS", "0")
    assert cli.main(["nats", "init"]) == 2
    err = capsys.readouterr().err
    assert "--nats-replicas (KUBENETMON_NATS_REPLICAS): expected an integer from 1 to 5, got 0" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nats-url=http://x"], "--nats-url (KUBENETMON_NATS_URL): expected nats://host:port"),
        (
            ["--nats-raw-max-age=soon"],
            "--nats-raw-max-age (KUBENETMON_NATS_RAW_MAX_AGE): expected a duration",
        ),
        (
            ["--nats-raw-max-bytes=lots"],
            "--nats-raw-max-bytes (KUBENETMON_NATS_RAW_MAX_BYTES): expected a size",
        ),
        (
            ["--nats-raw-max-bytes=0"],
            "--nats-raw-max-bytes (KUBENETMON_NATS_RAW_MAX_BYTES): expected bytes > 0 or -1",
        ),
        (
            ["--nats-replicas=7"],
            "--nats-replicas (KUBENETMON_NATS_REPLICAS): expected an integer from 1 to 5, got 7",
        ),
        (
            ["--nats-storage=tape"],
            "--nats-storage (KUBENETMON_NATS_STORAGE): expected one of file, memory, got 'tape'",
        ),
        (
            ["--nats-stream-prefix=a.b"],
            "--nats-stream-prefix (KUBENETMON_NATS_STREAM_PREFIX): expected letters",
        ),
        (["--nats-subject-prefix=a.>"], "--nats-subject-prefix (KUBENETMON_NATS_SUBJECT_PREFIX)"),
        (
            ["--nats-max-deliver=1"],
            "--nats-max-deliver (KUBENETMON_NATS_MAX_DELIVER): expected an integer >= 2",
        ),
        (
            ["--nats-backoff=1s,2s,3s", "--nats-max-deliver=3"],
            "--nats-backoff (KUBENETMON_NATS_BACKOFF): expected fewer",
        ),
        (
            ["--nats-duplicate-window=30d"],
            "--nats-duplicate-window (KUBENETMON_NATS_DUPLICATE_WINDOW): expected a",
        ),
        (["--nats-tls-cert=/c.pem"], "--nats-tls-key (KUBENETMON_NATS_TLS_KEY): expected both"),
        (["--nats-password=hunter2"], "--nats-password (KUBENETMON_NATS_PASSWORD): expected --nats-user"),
    ],
)
def test_bad_nats_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        nats_settings(parse(argv))
    assert str(err.value).startswith(message)


def test_secrets_never_appear_in_messages_or_help() -> None:
    with pytest.raises(ConfigError) as err:
        nats_settings(parse(["--nats-password=hunter2"]))
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in parser().format_help()


@pytest.mark.parametrize(
    ("cls", "changes", "flag"),
    [
        (HttpSettings, {"port": 70000}, "--http-port"),
        (PoolSettings, {"workers": 0}, "--workers"),
        (PoolSettings, {"respawn_backoff_s": 5.0, "respawn_backoff_max_s": 1.0}, "--respawn-backoff-max"),
        (RuntimeSettings, {"drain_timeout_s": 0.0}, "--drain-timeout"),
    ],
)
def test_other_concerns_validate_too(cls: type, changes: dict[str, object], flag: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(flag)):
        cls(**changes)


def test_settings_are_frozen_and_backoff_repeats_its_last_delay() -> None:
    s = NatsSettings(backoff_s=(1.0, 5.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_deliver = 3  # type: ignore[misc]
    assert [s.backoff_delay(n) for n in (0, 1, 2, 3, 10)] == [1.0, 1.0, 5.0, 5.0, 5.0]
    assert (s.raw_stream, s.enriched_stream, s.dlq_stream) == (
        "KUBENETMON_RAW",
        "KUBENETMON_ENRICHED",
        "KUBENETMON_DLQ",
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert options.parse_duration(text) == seconds
    assert options.parse_duration(options.format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("1KiB", 1024), ("2MB", 2_000_000), ("1.5GiB", 1536 * 1024**2), ("-1", -1)],
)
def test_sizes(text: str, size: int) -> None:
    assert options.parse_size(text) == size


def test_every_option_has_a_unique_flag_and_help() -> None:
    flags = [
        f.metadata["flag"] for cls in ALL_SETTINGS for f in dataclasses.fields(cls) if "flag" in f.metadata
    ]
    assert len(flags) == len(set(flags))
    assert all(f.metadata.get("help") for cls in ALL_SETTINGS for f in dataclasses.fields(cls))


def test_reference_table_lists_every_flag_and_variable() -> None:
    table = options.reference(*ALL_SETTINGS)
    for cls in ALL_SETTINGS:
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            assert f"`{flag}` | `{options.env_var(flag)}`" in table
    assert "(secret)" in table


def test_configuration_reference_is_current() -> None:
    """The generated table in docs/reference.md must match the code (``options.reference``)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    for line in options.reference(*ALL_SETTINGS).splitlines()[2:]:
        assert line in text, f"docs/reference.md is stale: missing {line}"


@pytest.mark.parametrize(
    ("argv", "environ", "host", "port"),
    [
        (["--metrics-port=9811", "--metrics-host=127.0.0.1"], {}, "127.0.0.1", 9811),
        ([], {"KUBENETMON_METRICS_PORT": "9812", "KUBENETMON_METRICS_HOST": "::1"}, "::1", 9812),
        ([], {"KUBENETMON_METRICS_PORT": "9812", "KUBENETMON_HTTP_PORT": "9813"}, "0.0.0.0", 9813),
        (["--http-port=9814"], {"KUBENETMON_METRICS_PORT": "9812"}, "0.0.0.0", 9814),
    ],
)
def test_metrics_flags_are_aliases_of_the_http_flags(
    argv: list[str], environ: dict[str, str], host: str, port: int
) -> None:
    assert http_settings(parse(argv, environ)) == HttpSettings(host=host, port=port)


@pytest.mark.parametrize("role", ["agent", "enricher", "metadata", "writer"])
def test_every_role_takes_both_names_of_its_http_flags(role: str) -> None:
    """The agent's flag was --metrics-port, the pools' --http-port: each role takes either."""
    _, subs = cli.build_parser()
    cli.load(role).configure(subs.choices[role])
    actions = {s: a for a in subs.choices[role]._actions for s in a.option_strings}
    assert actions["--http-port"] is actions["--metrics-port"]
    assert actions["--http-host"] is actions["--metrics-host"]


def test_replay_help_shows_only_the_nats_flags_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("raw", "enriched", "dlq"):
        with pytest.raises(SystemExit):
            cli.main(["replay", verb, "--help"])
        shown = capsys.readouterr().out
        assert "--nats-url" in shown and "--nats-ack-wait" in shown
        assert "--nats-raw-max-age" not in shown and "--nats-replicas" not in shown
        assert "--nats-storage" not in shown and "--nats-duplicate-window" not in shown


def test_every_flag_is_declared_so_the_reference_reads_it() -> None:
    from kubenetmon.cli import reference

    for name, sub in reference._commands():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert options.declaration(action) is not None, f"{name}: {action.option_strings}"


def test_every_value_in_help_says_what_it_is() -> None:
    """``--help`` shows what a value is (``DIR``, ``FILE``, ``DURATION``, the choices), never ``STR``."""
    from kubenetmon.cli import reference

    for name, sub in reference._commands():
        for action in sub._actions:
            if action.option_strings and action.nargs != 0:
                choices = ",".join(action.choices or ())
                shown = action.metavar or (f"{{{choices}}}" if choices else None)
                assert shown and shown != "STR", f"{name}: {action.option_strings} shows {shown!r}"


def test_one_duration_parser_with_two_framings() -> None:
    from kubenetmon.shared import timespec

    assert timespec.parse_duration("90s") == options.parse_duration("90s") == 90.0
    with pytest.raises(ConfigError, match="'soon' is not a duration such as"):
        timespec.parse_duration("soon")
    with pytest.raises(ConfigError, match="'-5m' is not a positive duration"):
        timespec.parse_duration("-5m")
    with pytest.raises(ValueError, match="a duration such as"):
        options.parse_duration("soon")
