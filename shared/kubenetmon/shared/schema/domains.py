"""What values a field may hold, stated once per field and checked two ways.

Why: the decoders validate whole columns at once on the hot path (a few C-level passes per column) and
value by value only to name the culprit of a message already known to be bad. Both checks are methods of
one ``Domain`` object, so the rule for a field (its type, its range, its length) is written in one place
and the two ways cannot drift apart. A RAW field's domain also gives its width in the flow identity
(``code``, a ``struct`` format).

Values are what msgpack decodes: integers are exactly ``int`` (``bool`` is refused) and always within
[``MSGPACK_INT_MIN``, 2**64), so the column checks skip a bound every msgpack integer meets. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from kubenetmon.shared.schema.limits import ADDRESS_LENGTH, U32, U64

MSGPACK_INT_MIN: Final = -(1 << 63)
_CODES: Final = {0xFF: "B", 0xFFFF: "H", U32: "I", U64: "Q"}


class Domain(Protocol):
    def admits(self, value: Any) -> bool:
        """One value: the precise check, which names a culprit."""
        ...

    def admits_all(self, values: Sequence[Any]) -> bool:
        """A whole non-empty column at once: the same answer as ``admits`` on every value, faster."""
        ...


class Ints:
    """Exact ``int`` (never ``bool``) in ``[lo, hi]``."""

    __slots__ = ("_high", "_low", "code", "hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.code = _CODES.get(hi, "") if lo == 0 else ""
        """The ``struct`` code of exactly this range (``B``, ``H``, ``I``, ``Q``), or empty."""
        self._low, self._high = lo > MSGPACK_INT_MIN, hi < U64  # the bounds msgpack does not guarantee

    def admits(self, value: Any) -> bool:
        return type(value) is int and self.lo <= value <= self.hi

    def admits_all(self, values: Sequence[Any]) -> bool:
        return set(map(type, values)) == {int} and self.bounded(values)

    def bounded(self, values: Iterable[int]) -> bool:
        """Every one of ``values`` (at least one; all ``int``, from msgpack) is in range: one pass per
        bound msgpack does not already guarantee."""
        if self._low and self._high:
            values = list(values)
            return self.lo <= min(values) and max(values) <= self.hi
        if self._low:
            return self.lo <= min(values)
        return max(values) <= self.hi if self._high else True


class OneOf:
    """Exactly of type ``typ`` and one of ``allowed``."""

    __slots__ = ("allowed", "typ")

    def __init__(self, typ: type, allowed: frozenset[Any]) -> None:
        self.typ, self.allowed = typ, allowed

    def admits(self, value: Any) -> bool:
        return type(value) is self.typ and value in self.allowed

    def admits_all(self, values: Sequence[Any]) -> bool:
        return set(map(type, values)) == {self.typ} and set(values) <= self.allowed


class Typed:
    """Exactly of type ``typ`` (a subclass is refused), any value."""

    __slots__ = ("typ",)

    def __init__(self, typ: type) -> None:
        self.typ = typ

    def admits(self, value: Any) -> bool:
        return type(value) is self.typ

    def admits_all(self, values: Sequence[Any]) -> bool:
        return set(map(type, values)) == {self.typ}


class Binary:
    """``bytes`` of exactly ``length`` bytes."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def admits(self, value: Any) -> bool:
        return type(value) is bytes and len(value) == self.length

    def admits_all(self, values: Sequence[Any]) -> bool:
        return set(map(type, values)) == {bytes} and set(map(len, values)) == {self.length}


class Flags:
    """A map of string names to ``bool`` flags."""

    __slots__ = ()

    def admits(self, value: Any) -> bool:
        return type(value) is dict and all(type(k) is str and type(v) is bool for k, v in value.items())

    def admits_all(self, values: Sequence[Any]) -> bool:
        return set(map(type, values)) == {dict} and all(map(self.admits, values))


class Address:
    """A raw address: ``bytes`` as long as its row's family says (``ADDRESS_LENGTH``).

    The length depends on another field, so it is checked with the family at hand; in a flow identity an
    address takes 16 bytes (an IPv4 address zero-padded: the family says which it is).
    """

    __slots__ = ()
    code: Final = "16s"

    def admits(self, value: Any, *, family: int) -> bool:
        return type(value) is bytes and len(value) == ADDRESS_LENGTH.get(family, -1)


U8: Final = Ints(0, 0xFF)
U16: Final = Ints(0, 0xFFFF)
UINT32: Final = Ints(0, U32)
UINT64: Final = Ints(0, U64)
ADDRESS: Final = Address()
