"""Bad configuration, for every command: a non-zero exit and one clear line naming the problem.

Each case runs the real ``kubenetmon`` command in a subprocess, with flags or ``KUBENETMON_*`` variables,
and nothing else from the environment. What counts as "one clear line":

- our own errors: stderr is exactly one line, ``kubenetmon <command>: ...``, naming the flag (and its
  variable) or the value at fault;
- argparse's own usage errors (unknown flag, a choice that does not exist): its usage text and one
  ``error:`` line, as argparse prints them;
- never a traceback, never a log line, and never a secret (a DSN's password is shown as ``***``).

The services (agent, enricher, writer) check everything they can before they start anything: a
missing file (credentials, CA, inventory, kubeconfig, custom ranges) is a configuration error, not an
outage to retry, so they fail at once instead of starting workers that crash in a loop.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.commands import kubenetmon

MISSING = "/nonexistent/kubenetmon-test-file"
SECRET = "Sup3rS3cretPassw0rd"

Case = tuple[list[str], dict[str, str], str]
"""(arguments, environment, a fragment the error line must contain)."""

CASES: dict[str, Case] = {
    # agent (the sanity check needs root and a real namespace: these fail before it, or in it)
    "agent unknown flag": (["agent", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    "nats init unknown flag": (["nats", "init", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    "agent bad duration": (["agent", "--poll-interval", "5parsecs"], {}, "--poll-interval"),
    "agent bad size (env)": (
        ["agent"],
        {"KUBENETMON_MAX_MESSAGE_BYTES": "lots"},
        "KUBENETMON_MAX_MESSAGE_BYTES",
    ),
    "agent no node name": (["agent"], {}, "--node-name"),
    "agent bad NATS URL": (
        ["agent", "--node-name", "n1", "--nats-url", "http://127.0.0.1:4222"],
        {},
        "--nats-url",
    ),
    "agent missing creds": (["agent", "--node-name", "n1", "--nats-creds", MISSING], {}, "--nats-creds"),
    "agent missing namespace": (
        ["agent", "--netns", "kubenetmon-no-such-ns", "--node-name", "n1"],
        {},
        "kubenetmon-no-such-ns",
    ),
    # enricher
    "enricher unknown flag": (["enricher", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    "enricher unknown cloud": (["enricher", "--cloud", "oracle"], {}, "--cloud"),
    "enricher unknown cloud (env)": (["enricher"], {"KUBENETMON_CLOUD": "oracle"}, "KUBENETMON_CLOUD"),
    "enricher NATS URL syntax": (["enricher", "--nats-url", "nats://a b"], {}, "--nats-url"),
    "enricher bad duration": (["enricher", "--nats-ack-wait", "10parsecs"], {}, "--nats-ack-wait"),
    "enricher bad size": (["enricher", "--nats-raw-max-bytes", "12XB"], {}, "--nats-raw-max-bytes"),
    "enricher bad CIDR": (["enricher", "--private-cidr", "10.0.0.0/99"], {}, "10.0.0.0/99"),
    "enricher no workers": (["enricher", "--workers", "0"], {}, "--workers"),
    "enricher bad clock skew": (["enricher", "--max-clock-skew", "5parsecs"], {}, "--max-clock-skew"),
    "enricher negative TTL": (["enricher", "--ttl-days", "-1"], {}, "--ttl-days"),
    "enricher fractional interval": (["enricher", "--interval", "1.5s"], {}, "--interval"),
    "enricher bad port": (["enricher", "--http-port", "70000"], {}, "--http-port"),
    "enricher missing inventory": (["enricher", "--inventory", MISSING], {}, "--inventory"),
    "enricher missing kubeconfig": (["enricher", "--kubeconfig", MISSING], {}, "--kubeconfig"),
    "enricher missing custom ranges": (
        ["enricher", "--inventory", "/etc/hostname", "--custom-ranges", MISSING],
        {},
        "--custom-ranges",
    ),
    "enricher missing creds": (["enricher", "--nats-creds", MISSING], {}, "--nats-creds"),
    "enricher missing CA": (["enricher", "--nats-tls-ca", MISSING], {}, "--nats-tls-ca"),
    "enricher cert without key": (["enricher", "--nats-tls-cert", MISSING], {}, "--nats-tls-key"),
    "enricher password without user": (["enricher"], {"KUBENETMON_NATS_PASSWORD": SECRET}, "--nats-user"),
    "enricher unknown metadata source": (
        ["enricher", "--metadata-source", "api"],
        {},
        "--metadata-source",
    ),
    "enricher META and an inventory": (
        ["enricher", "--metadata-source", "meta"],
        {"KUBENETMON_INVENTORY": "/etc/hostname"},
        "--inventory and --metadata-source meta exclude each other",
    ),
    # metadata
    "metadata unknown flag": (["metadata", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    "metadata lease too short": (["metadata", "--lease-ttl", "500ms"], {}, "--lease-ttl"),
    "metadata snapshot too often (env)": (
        ["metadata"],
        {"KUBENETMON_METADATA_SNAPSHOT": "10s"},
        "KUBENETMON_METADATA_SNAPSHOT",
    ),
    "metadata missing kubeconfig": (["metadata", "--kubeconfig", MISSING], {}, "--kubeconfig"),
    # writer
    "writer unknown flag": (["writer", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    "writer no DSN": (["writer"], {}, "--clickhouse-dsn"),
    "writer unknown scheme": (["writer", "--clickhouse-dsn", "postgres://db"], {}, "--clickhouse-dsn"),
    "writer unknown scheme (env)": (["writer"], {"KUBENETMON_CLICKHOUSE_DSN": "ftp://x"}, "--clickhouse-dsn"),
    "writer malformed DSN": (
        ["writer", "--clickhouse-dsn", f"http://u:{SECRET}@host:notaport/db"],
        {},
        "u:***@host:notaport",
    ),
    "writer relative chDB path": (["writer", "--clickhouse-dsn", "chdb://relative/dir"], {}, "chdb:///"),
    "writer missing password file": (
        ["writer", "--clickhouse-dsn", "https://h:8443", "--clickhouse-password-file", MISSING],
        {},
        "--clickhouse-password-file",
    ),
    "writer missing CA": (
        ["writer", "--clickhouse-dsn", "https://h:8443", "--clickhouse-ca-cert", MISSING],
        {},
        "--clickhouse-ca-cert",
    ),
    "writer bad integer": (
        ["writer", "--clickhouse-dsn", "chdb:///tmp/x", "--batch-rows", "abc"],
        {},
        "--batch-rows",
    ),
    "writer bad boolean": (
        ["writer", "--clickhouse-dsn", "chdb:///tmp/x", "--clickhouse-verify", "maybe"],
        {},
        "--clickhouse-verify",
    ),
    "writer missing NATS CA": (
        ["writer", "--clickhouse-dsn", "chdb:///tmp/x", "--nats-tls-ca", MISSING],
        {},
        "--nats-tls-ca",
    ),
    # sql, top, label
    "sql no target": (["sql", "SELECT 1"], {}, "no kubenetmon data there (run `kubenetmon up` first)"),
    "sql unknown scheme": (["sql", "--clickhouse-dsn", "mysql://x", "SELECT 1"], {}, "--clickhouse-dsn"),
    "sql unknown format": (["sql", "--data-dir", "/tmp", "--format", "xml", "SELECT 1"], {}, "--format"),
    "sql missing password file": (
        ["sql", "--clickhouse-dsn", "http://h:8123", "--clickhouse-password-file", MISSING, "SELECT 1"],
        {},
        "--clickhouse-password-file",
    ),
    "top bad window": (
        ["top", "--clickhouse-dsn", "http://127.0.0.1:9", "--since", "yesterday"],
        {},
        "yesterday",
    ),
    "top unknown grouping": (["top", "--data-dir", "/tmp", "--by", "color"], {}, "--by"),
    "label unknown cloud": (["label", "--node", "n1", "--cloud", "oracle"], {}, "--cloud"),
    "label missing inventory": (["label", "--node", "n1", "--inventory", MISSING], {}, MISSING),
    # admin verbs
    "nats init URL syntax": (["nats", "init", "--nats-url", "nats:/x"], {}, "--nats-url"),
    "nats init missing creds": (["nats", "init", "--nats-creds", MISSING], {}, "--nats-creds"),
    "nats init bad wait": (["nats", "init", "--connect-wait", "soon"], {}, "--connect-wait"),
    "nats init replicas": (["nats", "init", "--nats-replicas", "9"], {}, "--nats-replicas"),
    "clickhouse migrate no data": (["clickhouse", "migrate"], {}, "no kubenetmon data there"),
    "clickhouse migrate bad TTL": (
        ["clickhouse", "migrate", "--clickhouse-dsn", "chdb:///tmp/x", "--ttl-days", "-1"],
        {},
        "--ttl-days",
    ),
    "conntrack dump missing namespace": (
        ["conntrack", "dump", "--netns", "kubenetmon-no-such-ns"],
        {},
        "kubenetmon-no-such-ns",
    ),
    "up bad interval": (["up", "--interval", "7parsecs"], {}, "--interval"),
    "up unknown cloud": (["up", "--cloud", "oracle"], {}, "--cloud"),
    "up missing inventory": (["up", "--inventory", MISSING], {}, "--inventory"),
    "replay bad time": (["replay", "raw", "--from", "garbage"], {}, "garbage"),
    "replay NATS URL syntax": (["replay", "raw", "--from", "-2h", "--nats-url", "nats:/x"], {}, "--nats-url"),
}


def run(argv: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return kubenetmon(*argv, env={"HOME": str(tmp_path), **env}, cwd=tmp_path, timeout=60)


def error_lines(stderr: str) -> list[str]:
    """The lines that say what is wrong: argparse's usage block (and its continuations) left out."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("usage:"):
        return [line for line in lines if not line.startswith(("usage:", " "))]
    return lines


@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_bad_configuration_is_one_clear_line(case: str, tmp_path: Path) -> None:
    argv, env, fragment = CASES[case]
    done = run(argv, env, tmp_path)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    [line] = lines
    command = argv[0]
    assert line.startswith(f"kubenetmon {command}"), line
    assert fragment in line, line
    assert SECRET not in done.stderr + done.stdout
    assert not line.lstrip().startswith("{"), "a log line, not a message"
