"""The index following a Kubernetes API (mock server over HTTP) through the real client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubenetmon.enricher import watch
from kubenetmon.enricher.index import Index
from kubenetmon.shared.errors import ConfigError
from tests.fixtures.kube import KubeApi
from tests.support.builders import T0, node, pod, service


class Synced:
    """An index fed by watcher threads, with a condition to wait on (never a sleep)."""

    def __init__(self, grace: float = 900.0) -> None:
        self.index = Index(grace_seconds=grace)
        self.cond = threading.Condition()
        self.updates: list[watch.Update] = []

    def deliver(self, update: watch.Update) -> None:
        with self.cond:
            watch.apply(self.index, update)
            self.updates.append(update)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[Index], bool], *, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.index):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met; index sizes {self.index.sizes()}")
                self.cond.wait(left)


def ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def holder(index: Index, address: str, at: float | None = None) -> str | None:
    t = time.time() if at is None else at
    found = index.pod_at(ip(address), t, t + 1)
    return None if found is None else found.name


@pytest.fixture
def synced(kubeconfig: Path) -> Iterator[tuple[Synced, Callable[..., watch.KubeWatch]]]:
    state = Synced()
    started: list[watch.KubeWatch] = []

    def start(**overrides: object) -> watch.KubeWatch:
        settings = watch.WatchSettings(
            kubeconfig=str(kubeconfig), backoff_s=0.05, backoff_max_s=0.2, **overrides
        )  # type: ignore[arg-type]
        kw = watch.KubeWatch(settings, state.deliver)
        started.append(kw)
        return kw.start()

    yield state, start
    for kw in started:
        kw.close()
        assert not any(t.is_alive() for t in kw._threads)


def populate(api: KubeApi) -> None:
    api.add("nodes", node("n1", "192.168.0.1", zone="z1"))
    api.add("nodes", node("n2", "192.168.0.2", zone="z2"))
    api.add("services", service("dns", "10.96.0.10", namespace="kube-system"))
    for i in range(5):
        api.add("pods", pod(f"p{i}", f"10.1.0.{i + 1}", node="n1", created=T0))


def test_ready_only_after_every_kind_was_listed(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    state, start = synced
    populate(kube_api)
    kube_api.hold_lists()
    start()
    kube_api.wait_for(("pods", "list"), 1)
    assert not state.index.ready
    kube_api.release_lists()
    state.wait(lambda ix: ix.ready)
    assert state.index.sizes() == {"pods": 5, "pod_ips": 5, "nodes": 2, "services": 1}
    assert state.index.services[ip("10.96.0.10")] == "kube-system/dns"
    assert state.index.nodes["n2"].zone == "z2"


def test_a_list_is_stamped_when_asked_for_not_when_it_arrived(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    """The list shows the cluster as it was when asked; a pod another enricher saw appear while the answer
    was in flight must not look ended by it in the recorded history (``replay raw --metadata as-of``)."""
    state, start = synced
    populate(kube_api)
    kube_api.hold_lists()
    start()
    kube_api.wait_for(("pods", "list"), 1)
    asked_by = time.time()  # the request is at the server, its answer held back
    kube_api.release_lists()
    state.wait(lambda ix: ix.ready)
    [listed] = [u for u in state.updates if u.kind == "pods" and u.event == watch.LISTED]
    assert listed.at <= asked_by


def test_pagination_lists_everything(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    state, start = synced
    populate(kube_api)
    start(page_size=2)
    state.wait(lambda ix: ix.ready)
    assert len(state.index.pods) == 5
    assert kube_api.requests[("pods", "list")] == 3  # 2 + 2 + 1


def test_add_modify_delete_and_ip_reuse(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    state, start = synced
    populate(kube_api)
    start()
    state.wait(lambda ix: ix.ready)

    web = kube_api.add(
        "pods", pod("web", "10.1.1.1", node="n2", uid="u-web", created=T0, labels={"app": "web"})
    )
    state.wait(lambda ix: holder(ix, "10.1.1.1") == "web")

    web["metadata"]["labels"] = {"app.kubernetes.io/name": "frontend"}
    kube_api.modify("pods", web)
    state.wait(lambda ix: ix.pods["u-web"].app == "frontend")

    kube_api.delete("pods", web)
    state.wait(lambda ix: ix.pods["u-web"].until is not None)
    deleted_at = state.index.pods["u-web"].until
    assert deleted_at is not None
    assert holder(state.index, "10.1.1.1", deleted_at + 60) == "web"  # within the grace period
    assert holder(state.index, "10.1.1.1", deleted_at + 1000) is None

    # the IP comes back with another pod: each interval resolves to its own holder
    kube_api.add("pods", pod("api", "10.1.1.1", node="n1", uid="u-api", created=deleted_at + 30))
    state.wait(lambda ix: "u-api" in ix.pods)
    assert holder(state.index, "10.1.1.1", deleted_at - 100) == "web"
    assert holder(state.index, "10.1.1.1", deleted_at + 120) == "api"
    assert kube_api.requests[("pods", "list")] == 1  # all of that came through the watch


def test_410_gone_forces_a_relist(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    state, start = synced
    populate(kube_api)
    start()
    state.wait(lambda ix: ix.ready)
    assert kube_api.requests[("pods", "list")] == 1

    kube_api.expire()  # history gone, streams cut: resuming from the old version gets 410
    gone = kube_api.objects["pods"][("default", "p0")]
    kube_api.delete("pods", gone)
    kube_api.add("pods", pod("late", "10.1.2.2", node="n1", uid="u-late", created=T0))

    kube_api.wait_for(("pods", "list"), 2)
    state.wait(lambda ix: "u-late" in ix.pods and ix.pods["uid-default-p0"].until is not None)
    kube_api.wait_for(("nodes", "list"), 2)  # every kind's watch got its 410 and relisted
    kube_api.wait_for(("services", "list"), 2)
    assert [u.kind for u in state.updates if u.event == watch.LISTED].count("pods") == 2


def test_a_cut_stream_resumes_from_the_last_version_without_relisting(
    kube_api: KubeApi, synced: tuple[Synced, Callable[..., watch.KubeWatch]]
) -> None:
    state, start = synced
    populate(kube_api)
    start()
    state.wait(lambda ix: ix.ready)
    kube_api.wait_watching("pods")  # ready once listed; cut the watch that follows, not before it opens
    kube_api.close_watches()
    kube_api.add("pods", pod("after", "10.1.3.3", node="n1", uid="u-after", created=T0))
    state.wait(lambda ix: "u-after" in ix.pods)
    kube_api.wait_for(("pods", "watch"), 2)
    assert kube_api.requests[("pods", "list")] == 1


def test_an_unreachable_api_is_retried_until_it_answers(tmp_path: Path, kube_api: KubeApi) -> None:
    # a kubeconfig pointing at a closed port first, then the right one: the watcher keeps retrying
    state = Synced()
    settings = watch.WatchSettings(
        kubeconfig=str(_kubeconfig(tmp_path, "http://127.0.0.1:9")), backoff_s=0.05
    )
    kw = watch.KubeWatch(settings, state.deliver).start()
    try:
        deadline = time.monotonic() + 10
        while not all(w.failures >= 2 for w in kw.watchers):
            assert time.monotonic() < deadline
            kw.watchers[0].stop.wait(0.02)
        assert not state.index.ready
    finally:
        kw.close()
    assert not any(t.is_alive() for t in kw._threads)


def test_missing_credentials_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        watch.api_client(watch.WatchSettings(kubeconfig=str(tmp_path / "absent")))


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    import json

    path = tmp_path / "kc"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path
