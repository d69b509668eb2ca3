"""The error hierarchy every stage classifies failures with.

Two families matter to the consumer loop: a ``TransientError`` means "try this message again later"
(nak with backoff), a ``PoisonError`` means "this message will never succeed" (DLQ, then term). Code
raises the precise subclass; the loop classifies in one place and never guesses from ``Exception``.
"""

from __future__ import annotations


class KubenetmonError(Exception):
    """Base of every error kubenetmon raises on purpose."""


class ConfigError(KubenetmonError):
    """A setting is missing or invalid; the message says which and what is expected."""


class TransientError(KubenetmonError):
    """A failure that may succeed on retry (broker or database unavailable, timeouts)."""


class FatalError(KubenetmonError):
    """The process cannot go on (e.g. its broker connection was closed for good): exit non-zero so the
    supervisor, or Kubernetes, starts a fresh one. Unacknowledged work is redelivered to the others."""


class PoisonError(KubenetmonError):
    """A message that can never be processed; it belongs in the DLQ with ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DecodeError(PoisonError):
    """Bytes that are not a valid message of the expected kind and version.

    Carries the subject and raw bytes so the DLQ entry can be inspected and re-driven.
    ``reason`` is a short stable token (``malformed``, ``version``, ``oversized``, ``schema``,
    ``address``) suitable as a metric label.
    """

    def __init__(self, reason: str, detail: str = "", *, subject: str = "", data: bytes = b"") -> None:
        super().__init__(reason, detail)
        self.subject = subject
        self.data = data


class StoreFullError(TransientError):
    """The stream refused a publish because its store is full (its ``max_bytes``, or the server's store).

    Transient: the message must be kept and sent again once the stream has room; never dead-lettered
    for it, never dropped. ``stream`` is the stream kind (``raw``, ``enriched``, ``dlq``, ``meta``).
    """

    def __init__(self, stream: str, detail: str) -> None:
        super().__init__(detail)
        self.stream = stream
