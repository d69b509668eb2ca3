"""The enricher tests' fixtures: the cluster of ``tests.support.enricher`` as a kubectl-style inventory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.support.enricher import NODES, PODS, SERVICES


@pytest.fixture
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*NODES, *PODS, *SERVICES]}))
    return path
