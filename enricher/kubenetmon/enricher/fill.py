"""Fill the time-aware index from one metadata source: an inventory file, list+watch, or the META stream.

Why it exists: an enricher worker and ``replay raw --metadata current`` must label against an index
filled the same way. ``IndexFill.start`` loads a static ``--inventory`` (every kind listed at once) or
starts the watcher threads, whose updates are applied on the event loop; ``IndexFill.follow_meta``
builds and follows the index from META instead (``--metadata-source meta``, see ``metafeed``).
``listed`` is set once every kind was listed (for META: once the snapshot was applied and the reader
caught up). Every update also goes to the ``observer``, if there is one (the metadata history an
enricher records on META).

It must not label, publish or connect: the watch threads are ``watch``'s, reading META is
``metafeed``'s, the broker is the caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from kubenetmon.enricher import inventory
from kubenetmon.enricher.metafeed import MetaFeed
from kubenetmon.enricher.watch import LISTED, KubeWatch, Update, apply

if TYPE_CHECKING:
    from kubenetmon.enricher.index import Index
    from kubenetmon.enricher.objects import Obj
    from kubenetmon.enricher.watch import Watcher, WatchSettings
    from kubenetmon.shared.broker import Broker


class Observer(Protocol):
    """Sees every update the index receives (``recording.MetaPublisher``)."""

    def observe(self, kind: str, event: str, objects: Iterable[Obj], *, at: float) -> None: ...


class IndexFill:
    """The filling of one index; ``listed`` is set once every kind was listed."""

    def __init__(
        self,
        index: Index,
        *,
        inventory: str = "",
        watch: WatchSettings | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.index = index
        self.inventory = inventory
        self.watch = watch
        self.observer = observer
        self.listed = asyncio.Event()
        self.kube: KubeWatch | None = None

    @property
    def watchers(self) -> list[Watcher]:
        return self.kube.watchers if self.kube is not None else []

    async def start(self) -> None:
        """A static inventory (listed at once), else watcher threads whose updates reach this event loop."""
        if self.inventory:
            await self._load(self.inventory)
        elif self.watch is not None:
            self.kube = self._start_watch(self.watch)

    async def follow_meta(self, broker: Broker, *, stop: asyncio.Event) -> None:
        """The index from META, from its latest snapshot on, followed until ``stop``."""
        await MetaFeed(self.index).follow(broker, stop=stop, caught_up=self.listed)

    async def close(self) -> None:
        """Stop the watcher threads, if any."""
        if self.kube is not None:
            await asyncio.to_thread(self.kube.close)

    async def _load(self, path: str) -> None:
        at = time.time()
        await asyncio.to_thread(inventory.load, self.index, path, now=at)
        if self.observer is not None:
            objects = await asyncio.to_thread(inventory.read, path)
            for kind, objs in objects.items():
                self.observer.observe(kind, LISTED, objs, at=at)
        self.listed.set()

    def _start_watch(self, settings: WatchSettings) -> KubeWatch:
        loop = asyncio.get_running_loop()

        def on_loop(update: Update) -> None:
            apply(self.index, update)
            if self.observer is not None:
                self.observer.observe(update.kind, update.event, update.objects, at=update.at)
            if self.index.ready and not self.listed.is_set():
                self.listed.set()

        def deliver(update: Update) -> None:  # called in watcher threads: hand over, never touch the index
            loop.call_soon_threadsafe(on_loop, update)

        return KubeWatch(settings, deliver).start()
