"""Loading range sources: files, URLs (a local HTTP server), the on-disk cache, missing sources."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import DEFAULT_PRIVATE
from kubenetmon.enricher.ranges import Range
from kubenetmon.shared.errors import ConfigError

DATA = Path(__file__).parent / "data"


class _Files(http.server.SimpleHTTPRequestHandler):
    available: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.available.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving a dict of path -> body (tests never reach the network)."""
    available: ClassVar[dict[str, bytes]] = {}
    handler = type("Handler", (_Files,), {"available": available})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", available
    finally:
        server.shutdown()
        server.server_close()


def test_files_are_detected_and_merged() -> None:
    settings = sources.RangeSettings(
        sources=tuple(
            str(DATA / n)
            for n in ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
        )
    )
    report = sources.LoadReport()
    table = sources.load_table(settings, private=DEFAULT_PRIVATE, report=report)
    assert len(report.loaded) == 4 and not report.failed
    assert table.lookup_text("3.5.140.9") == Range("aws", "s3", "ap-northeast-2")
    assert table.lookup_text("8.8.8.8") == Range("gcp", "googleservice", "global")
    assert table.lookup_text("20.60.1.1") == Range("azure", "azurestorage", "westeurope")


def test_a_named_format_prefix_is_honoured(tmp_path: Path) -> None:
    kind, location = sources.split_source("goog=" + str(DATA / "goog.json"))
    assert (kind, location) == ("goog", str(DATA / "goog.json"))
    assert sources.split_source("C:=x") == (None, "C:=x")


def test_missing_and_broken_sources_degrade_without_failing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    settings = sources.RangeSettings(
        sources=(str(tmp_path / "absent.json"), str(broken), str(DATA / "goog.json"))
    )
    report = sources.LoadReport()
    table = sources.load_table(settings, private=DEFAULT_PRIVATE, report=report)
    assert set(report.failed) == {str(tmp_path / "absent.json"), str(broken)}
    assert table.lookup_text("8.8.4.4") is not None  # the good source still loaded
    assert table.lookup_text("10.0.0.1") is not None  # private ranges are always there


def test_url_is_cached_and_the_cache_serves_when_the_url_fails(
    http_files: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    base, available = http_files
    available["/ip-ranges.json"] = (DATA / "aws-ip-ranges.json").read_bytes()
    settings = sources.RangeSettings(sources=(base + "/ip-ranges.json",), cache_dir=str(tmp_path / "cache"))

    first = sources.LoadReport()
    table = sources.load_table(settings, private=DEFAULT_PRIVATE, report=first)
    assert first.loaded == {base + "/ip-ranges.json": 11} and not first.cached
    assert table.lookup_text("13.244.1.1") == Range("aws", "ec2", "af-south-1")
    assert len(list((tmp_path / "cache").iterdir())) == 1

    del available["/ip-ranges.json"]  # the URL now answers 404
    second = sources.LoadReport()
    table = sources.load_table(settings, private=DEFAULT_PRIVATE, report=second)
    assert second.cached == [base + "/ip-ranges.json"] and not second.failed
    assert table.lookup_text("13.244.1.1") == Range("aws", "ec2", "af-south-1")


def test_url_without_cache_fails_softly(http_files: tuple[str, dict[str, bytes]]) -> None:
    base, _ = http_files
    report = sources.LoadReport()
    sources.load_table(
        sources.RangeSettings(sources=(base + "/nothing.json",)), private=DEFAULT_PRIVATE, report=report
    )
    assert list(report.failed) == [base + "/nothing.json"]


def test_custom_ranges_are_configuration_errors_when_broken(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        sources.load_user([str(tmp_path / "absent.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("ranges: [{name: x}]\n")
    with pytest.raises(ConfigError):
        sources.load_user([str(bad)])
    assert (
        len(sources.load_user([str(DATA / "custom-ranges.yaml"), str(DATA / "custom-kubenetmon.json")])) == 5
    )
