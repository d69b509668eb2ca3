"""``kubenetmon nats``: the admin command an operator or a deploy Job runs, end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubenetmon.cli.nats import _Init
from kubenetmon.cli.natsserver import NatsServer, free_port
from kubenetmon.shared.topology import Change
from tests.fixtures.nats import nats_settings_for
from tests.fixtures.nats_cluster import NatsCluster, cluster_settings
from tests.support import commands
from tests.support.waiting import wait_until


def kubenetmon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return commands.kubenetmon(*args, env=env, timeout=60)


def test_nats_without_a_verb_prints_help() -> None:
    out = kubenetmon("nats")
    assert out.returncode == 2
    assert "init" in out.stdout and "status" in out.stdout


def test_init_creates_then_leaves_alone_then_updates(nats_server: NatsServer) -> None:
    s = nats_settings_for(nats_server)
    env = {"KUBENETMON_NATS_URL": nats_server.url, "KUBENETMON_NATS_STREAM_PREFIX": s.stream_prefix}
    flags = ["--nats-subject-prefix", s.subject_prefix]

    first = kubenetmon("nats", "init", *flags, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"stream {s.stream_prefix}_RAW: created",
        f"stream {s.stream_prefix}_ENRICHED: created",
        f"stream {s.stream_prefix}_DLQ: created",
        f"stream {s.stream_prefix}_META: created",
        f"consumer {s.stream_prefix}_RAW/enricher: created",
        f"consumer {s.stream_prefix}_ENRICHED/writer: created",
        f"bucket {s.stream_prefix}_metadata: created",
        "topology: 7 created",
    ]
    again = kubenetmon("nats", "init", *flags, env=env)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == "topology: 7 unchanged"

    longer = kubenetmon("nats", "init", *flags, "--nats-enriched-max-age", "3d", env=env)
    assert longer.returncode == 0
    assert f"stream {s.stream_prefix}_ENRICHED: updated (max_age_s: 172800.0 -> 259200.0)" in longer.stdout

    smaller = kubenetmon(
        "nats", "init", *flags, "--nats-enriched-max-age", "3d", "--nats-raw-max-bytes", "512MiB", env=env
    )
    assert smaller.returncode == 0
    assert smaller.stdout.splitlines()[-1] == "topology: 1 updated, 6 unchanged"
    assert f"stream {s.stream_prefix}_RAW: updated (max_bytes: 2147483648 -> 536870912)" in smaller.stdout

    status = kubenetmon("nats", "status", *flags, "--nats-raw-max-bytes", "512MiB", env=env)
    assert status.returncode == 0
    assert f"consumer {s.stream_prefix}_ENRICHED/writer: 0 pending" in status.stdout
    assert f"stream {s.stream_prefix}_RAW: 0 messages, 0 bytes of 536870912 (0%), " in status.stdout

    conflict = kubenetmon("nats", "init", *flags, "--nats-storage", "memory", env=env)
    assert conflict.returncode == 1
    assert "conflict" in conflict.stdout and "cannot change in place" in conflict.stdout
    # the lease bucket is a stream too: its storage cannot change in place either
    assert (
        f"bucket {s.stream_prefix}_metadata: conflict (storage: 'file' -> 'memory'; storage cannot change in "
        "place: delete and recreate the bucket)" in conflict.stdout.splitlines()
    )


def test_init_fails_clearly_when_nats_is_unreachable() -> None:
    out = kubenetmon(
        "nats", "init", "--nats-url", f"nats://127.0.0.1:{free_port()}", "--connect-wait", "500ms"
    )
    assert out.returncode == 1
    assert "kubenetmon nats init: cannot connect to nats://127.0.0.1:" in out.stderr


def test_init_started_with_its_cluster_waits_for_a_jetstream_leader(tmp_path: Path) -> None:
    """The deploy Job starts with the StatefulSet: its first member answers, but no JetStream leader exists
    until a quorum runs. ``init`` says so, asks again, and creates the R3 topology once the others come."""
    cluster = NatsCluster(tmp_path / "cluster")
    settings = cluster_settings(cluster)
    stderr = tmp_path / "init.stderr"
    try:
        cluster.servers[0].launch()
        with stderr.open("w") as err:
            init = subprocess.Popen(
                [*commands.KUBENETMON, "nats", "init", *commands.flags(settings), "--settle-wait", "90s"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        try:
            wait_until(
                lambda: "JetStream not ready, asking again" in stderr.read_text() or init.poll() is not None,
                timeout=60,
                what="init to meet a cluster without a JetStream leader",
            )
            assert init.poll() is None, stderr.read_text()
            cluster.start()  # the other members: a quorum, a leader
            out, _ = init.communicate(timeout=120)
        finally:
            if init.poll() is None:
                init.kill()
        assert init.returncode == 0, stderr.read_text()
        assert "topology: 7 created" in out, out + stderr.read_text()
    finally:
        cluster.stop()


def test_init_asked_again_reports_what_an_earlier_attempt_did() -> None:
    """An attempt that created streams and then met a JetStream not yet settled (a peer offline) is
    asked again; the attempt that finishes finds them unchanged, and init still says they were created."""
    init = _Init()
    first = init._merged((Change("stream", "RAW", "created"), Change("stream", "DLQ", "unchanged")))
    assert [c.action for c in first] == ["created", "unchanged"]
    again = init._merged(
        (Change("stream", "RAW", "unchanged"), Change("stream", "DLQ", "updated", ("max_bytes",)))
    )
    assert [(c.name, c.action) for c in again] == [("RAW", "created"), ("DLQ", "updated")]
