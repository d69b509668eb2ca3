"""nats-server run from the shipped ``nats.conf`` (one user per role, each with only its subjects), and
the role passwords the server reads from its environment."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.cli.natsserver import NatsServer, binary

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "k8s/components/nats-server/nats.conf"
PASSWORDS = {
    "kubenetmon-agent": "p-agent",
    "kubenetmon-enricher": "p-enricher",
    "kubenetmon-writer": "p-writer",
    "kubenetmon-metadata": "p-metadata",
    "kubenetmon-admin": "p-admin",
}
SERVER_ENV = {
    "NATS_SERVER_NAME": "permissions",
    "KUBENETMON_AGENT_PASSWORD": PASSWORDS["kubenetmon-agent"],
    "KUBENETMON_ENRICHER_PASSWORD": PASSWORDS["kubenetmon-enricher"],
    "KUBENETMON_WRITER_PASSWORD": PASSWORDS["kubenetmon-writer"],
    "KUBENETMON_METADATA_PASSWORD": PASSWORDS["kubenetmon-metadata"],
    "KUBENETMON_ADMIN_PASSWORD": PASSWORDS["kubenetmon-admin"],
}


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
