"""The lab's reader of ``conntrack -L/-E -o extended,id`` lines."""

from __future__ import annotations

from kubenetmon.cli.lab.kernel import parse_line

LINE = (
    "[DESTROY] ipv4     2 tcp      6 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=49736 dport=80 "
    "packets=33 bytes=14768 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=49736 packets=46 bytes=14782 "
    "[ASSURED] mark=0 use=1 id=850169630"
)


def test_a_whole_line_is_an_entry() -> None:
    entry = parse_line(LINE)
    assert entry is not None
    assert entry.orig == ("10.0.0.1", "10.0.0.2", 49736, 80)
    assert entry.reply == ("10.0.0.2", "10.0.0.1", 80, 49736)
    assert (entry.orig_bytes, entry.reply_bytes, entry.id) == (14768, 14782, 850169630)


def test_a_line_cut_short_is_no_error() -> None:
    """A line without its reply tuple, or cut anywhere: no entry or a partial one, never an exception in
    the watch's reader thread (it raised KeyError now and then in the fault suite)."""
    assert parse_line(LINE.split(" src=10.0.0.2")[0]) is None
    for end in range(len(LINE)):
        parse_line(LINE[:end])
