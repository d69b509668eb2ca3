"""The one package that speaks NATS: connection, JetStream publish, topology, and pull consumers.

Everything else in kubenetmon sees plain types (``PublishResult``, ``Delivery``, ``PullSource``,
``StreamStats``, ``ConsumerStats``, ``TopologyReport``) and our own errors; nats types never leak out,
and no other module imports the nats client (import-linter checks it).

    async with await connect_ready(settings, name="enricher-0", wait_s=5.0) as broker:
        await broker.publish(broker.raw_subject(node), payload, msg_id=msg.msg_id)
        source = await broker.pull("enricher")
        deliveries = await source.fetch(100, 1.0)

This package must not decide what to do with a message (ack policy lives in ``consumer``) and must
not know any service.
"""

from kubenetmon.shared.broker.client import Broker
from kubenetmon.shared.broker.connection import MSG_ID_HEADER, preflight
from kubenetmon.shared.broker.kv import Entry, KeyValue, Lease
from kubenetmon.shared.broker.pulling import PullSource
from kubenetmon.shared.broker.ready import connect_ready, connect_ready_or_stop
from kubenetmon.shared.deliveries import ConsumerStats, Delivery, PublishResult, StreamStats
from kubenetmon.shared.topology import Change, TopologyReport

__all__ = [
    "MSG_ID_HEADER",
    "Broker",
    "Change",
    "ConsumerStats",
    "Delivery",
    "Entry",
    "KeyValue",
    "Lease",
    "PublishResult",
    "PullSource",
    "StreamStats",
    "TopologyReport",
    "connect_ready",
    "connect_ready_or_stop",
    "preflight",
]
