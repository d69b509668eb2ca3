"""The commands ``kubenetmon up`` runs, and the settings they come from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from kubenetmon.cli.up import argv
from kubenetmon.cli.up.settings import UpSettings, add_up_arguments, up_settings
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import default_data_dir


def _settings(*flags: str) -> UpSettings:
    parser = argparse.ArgumentParser()
    add_up_arguments(parser)
    return up_settings(parser.parse_args(list(flags)), environ={"HOME": "/home/u"})


def test_defaults_and_layout(tmp_path: Path) -> None:
    assert default_data_dir({"XDG_DATA_HOME": "/x"}) == "/x/kubenetmon"
    s = _settings("--data-dir", str(tmp_path / "d"), "--node-name", "n1")
    assert s.clickhouse_dir == tmp_path / "d" / "clickhouse"
    assert (s.interval, s.poll_s) == (10, 2.0)
    relative = _settings("--data-dir", "rel")
    assert Path(relative.data_dir).is_absolute()
    with pytest.raises(ConfigError, match="--interval"):
        _settings("--interval", "2.5s")
    with pytest.raises(ConfigError, match="no --netns with --demo"):
        _settings("--demo", "--netns", "x")


def test_every_role_gets_its_settings_as_flags(tmp_path: Path) -> None:
    s = _settings("--data-dir", str(tmp_path), "--interval", "4", "--by", "pod", "--cloud", "aws")
    url = "nats://127.0.0.1:4333"
    writer = argv.writer(s, nats_url=url)
    assert writer[:4] == [sys.executable, "-m", "kubenetmon.cli.main", "writer"]
    assert f"chdb://{tmp_path}/clickhouse" in writer and url in writer
    agent = argv.agent(s, nats_url=url, node="n1", netns="ns1")
    assert agent[agent.index("--netns") + 1] == "ns1" and agent[agent.index("--interval") + 1] == "4s"
    assert agent[agent.index("--state-dir") + 1] == str(tmp_path / "agent" / "n1")
    enricher = argv.enricher(s, nats_url=url, inventory="/i.json", kubeconfig="", extra=("--cloud", "gcp"))
    assert enricher[enricher.index("--inventory") + 1] == "/i.json"
    assert "gcp" in enricher and "aws" not in enricher  # the metadata's own labelling flags win
    assert argv.labelling(s, inventory="/i.json", kubeconfig="", extra=("--cloud", "gcp")) == [
        "--inventory", "/i.json", "--interval", "4s", "--cloud", "gcp"
    ]  # fmt: skip
    assert enricher[enricher.index("--interval") + 1] == "4s"  # replay raw's plausibility check needs it
    assert "aws" in argv.enricher(s, nats_url=url, inventory="/i.json", kubeconfig="")
    view = argv.view(s, interactive=False)
    assert "--owner-only" in view and view[view.index("--watch") + 1] == "4s"
    assert view[view.index("--by") + 1] == "pod"
    assert argv.view(s, interactive=True)[view.index("--watch") + 1] == "2s"
