"""Socket owners, the pure parts: the pod UID in a cgroup path, and owners carried through reports."""

from __future__ import annotations

from kubenetmon.agent import reports
from kubenetmon.agent.owners import pod_uid
from kubenetmon.shared.schema import decode_raw
from tests.support.builders import raw_row

UID = "4f1c9a2e-7b3d-4e5f-9a8b-0c1d2e3f4a5b"


def test_pod_uid_from_cgroup_v1_v2_systemd_and_cgroupfs() -> None:
    v1 = f"12:memory:/kubepods/burstable/pod{UID}/0a1b2c\n11:cpu:/kubepods/burstable/pod{UID}/0a1b2c\n"
    v2_systemd = (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
        "cri-containerd-0a1b.scope\n"
    )
    v2_cgroupfs = f"0::/kubepods/pod{UID}/0a1b2c\n"
    assert pod_uid(v1) == pod_uid(v2_systemd) == pod_uid(v2_cgroupfs) == UID
    assert pod_uid("0::/system.slice/kubelet.service\n") == ""
    assert pod_uid("0::/kubepods.slice/kubepods-podnotauid.slice\n") == ""


def test_owners_follow_their_rows_into_chunks_merges_and_splits() -> None:
    rows = sorted(
        raw_row("tcp", ("10.0.0.1", 40000 + i, "8.8.8.8", 443), ("8.8.8.8", 443, "10.0.0.1", 40000 + i))
        for i in range(40)
    )
    owners = {3: UID, 39: "other-uid"}
    kw = {"node": "n1", "boot": "b", "seconds": 60, "max_bytes": 2000}
    report = reports.build(rows, start=0, seq=1, owners=owners, **kw)
    assert len(report.chunks) > 2
    named = {
        msg.rows[i].orig_sport: uid
        for msg in map(decode_raw, report.chunks)
        for i, uid in (msg.owners or {}).items()
    }
    assert named == {40003: UID, 40039: "other-uid"}
    later = reports.build(rows[:5], start=60, seq=2, **kw)
    merged = reports.merge(report, later, seq=3, max_bytes=2000)
    assert set(reports.owners_of(merged).values()) == {UID, "other-uid"}
    chunk = next(i for i, c in enumerate(report.chunks) if decode_raw(c).owners)
    assert reports.owners_of(reports.split(report, chunk, seq=4, max_bytes=1000))
