"""nats-server run from the shipped ``nats.conf`` (one user per role, each with only its subjects), and
the role passwords the server reads from its environment.

``nats.conf`` includes ``identity.conf``: ``write_conf`` puts next to it either the compose stack's
single-tenant one (the shared agent user) or the Kubernetes one (the auth callout, ``ISSUER``)."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.cli.natsserver import NatsServer, binary

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "k8s/components/nats-server/nats.conf"
IDENTITY_CALLOUT = ROOT / "k8s/components/nats-server/identity.conf"
IDENTITY_SINGLE_TENANT = ROOT / "k8s/components/nats-server/identity-single-tenant.conf"
ISSUER_SEED = "SAABMEZVDSEMTALV5I2ZLAEX2THXGKFPNJ6KV356QSFLCZZPVSGNNWNTNM"
"""The auth callout's issuer in the tests (an account nkey seed made for them)."""
ISSUER = "AB7YPGLSOCVPT52JIRWUBRLBBHKKMPYW53SSCFTF5RZVGBV4H3JXD74Y"
PASSWORDS = {
    "kubenetmon-agent": "p-agent",
    "kubenetmon-enricher": "p-enricher",
    "kubenetmon-writer": "p-writer",
    "kubenetmon-metadata": "p-metadata",
    "kubenetmon-admin": "p-admin",
    "kubenetmon-auth": "p-auth",
}
SERVER_ENV = {
    "NATS_SERVER_NAME": "permissions",
    "KUBENETMON_AGENT_PASSWORD": PASSWORDS["kubenetmon-agent"],
    "KUBENETMON_ENRICHER_PASSWORD": PASSWORDS["kubenetmon-enricher"],
    "KUBENETMON_WRITER_PASSWORD": PASSWORDS["kubenetmon-writer"],
    "KUBENETMON_METADATA_PASSWORD": PASSWORDS["kubenetmon-metadata"],
    "KUBENETMON_ADMIN_PASSWORD": PASSWORDS["kubenetmon-admin"],
    "KUBENETMON_AUTH_PASSWORD": PASSWORDS["kubenetmon-auth"],
    "KUBENETMON_AUTH_ISSUER": ISSUER,
}


def write_conf(directory: Path, *, callout: bool = False, text: str = "") -> Path:
    """``nats.conf`` (``text``, else the shipped one) with its store in ``directory``, and next to it
    the identity it includes; returns the configuration's path."""
    text = text or CONF.read_text()
    assert text.count("store_dir: /data\n") == 1
    conf = directory / "nats.conf"
    conf.write_text(text.replace("store_dir: /data\n", f"store_dir: {directory / 'js'}\n"))
    identity = IDENTITY_CALLOUT if callout else IDENTITY_SINGLE_TENANT
    (directory / "identity.conf").write_text(identity.read_text())
    return conf


class ConfiguredNats(NatsServer):
    """A nats-server started from a configuration file (ports and address from the command line)."""

    def __init__(self, store_dir: Path, conf: Path) -> None:
        super().__init__(store_dir)
        self.conf = conf

    def command(self) -> list[str]:
        return [
            binary(),
            "-c",
            str(self.conf),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
        ]
