"""The flow tuple: the one definition of a flow's identity fields (zone, protocol, both address tuples).

Why: the agent reads these fields out of a conntrack key (``ctnetlink.FlowKey``: the tuple plus the
conntrack instance) and reports them in a RAW row (``RawRow``: the tuple plus four counters). Both derive
from ``FlowTuple`` here, so the names, their order (the RAW wire order) and each field's domain (type,
range, width in the flow identity) are stated once, and a key becomes a row by slicing, not by copying
field after field. It lives in ``shared`` because the agent may import ``shared``, never the reverse.

``Record`` is a named tuple whose fields can be extended by subclassing: each subclass gets exactly what
``collections.namedtuple`` would generate for all its fields (C-level field access, ``_make``,
``_replace``, ``repr``, pickling), so a record costs what a ``NamedTuple`` costs. No I/O.
"""

from __future__ import annotations

import collections
import inspect
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final

from kubenetmon.shared.schema.domains import ADDRESS, U8, U16

if TYPE_CHECKING:
    from typing import Self

_GENERATED: Final = (
    "__new__",
    "__repr__",
    "__getnewargs__",
    "__match_args__",
    "_make",
    "_replace",
    "_asdict",
)


class Record(tuple[Any, ...]):
    """A named tuple whose subclasses may add fields: declare them as annotations, and ``__slots__ = ()``.

    A field annotated ``Annotated[type, domain]`` carries its value domain (``domains``): ``domains()``
    lists them in field order.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defaults: ClassVar[dict[str, Any]] = {}

    if TYPE_CHECKING:

        def __new__(cls, *values: Any, **named: Any) -> Self: ...

        @classmethod
        def _make(cls, iterable: Iterable[Any]) -> Self: ...

        def _replace(self, **changes: Any) -> Self: ...

        def _asdict(self) -> dict[str, Any]: ...

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__slots__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must declare __slots__ = () (a record has no instance dict)")
        own = tuple(inspect.get_annotations(cls))
        fields = (*cls._fields, *own)
        generated = collections.namedtuple(cls.__name__, fields)  # type: ignore[misc]  # names are dynamic
        for name in (*fields, *_GENERATED, "_fields", "_field_defaults"):
            setattr(cls, name, generated.__dict__[name])

    @classmethod
    def domains(cls) -> tuple[Any, ...]:
        """Each field's domain (the ``Annotated`` metadata), or None for a field without one."""
        hints = typing.get_type_hints(cls, include_extras=True)
        return tuple(getattr(hints[name], "__metadata__", (None,))[0] for name in cls._fields)


class FlowTuple(Record):
    """A flow's identity as conntrack names it. Addresses are raw 4- or 16-byte strings (``family``
    says which); ports are 0 for portless protocols. The order is the RAW wire order."""

    __slots__ = ()
    proto: Annotated[int, U8]
    family: Annotated[int, U8]
    """``AF_INET`` or ``AF_INET6``; any other value is refused where addresses are checked."""
    zone: Annotated[int, U16]
    orig_src: Annotated[bytes, ADDRESS]
    orig_dst: Annotated[bytes, ADDRESS]
    orig_sport: Annotated[int, U16]
    orig_dport: Annotated[int, U16]
    reply_src: Annotated[bytes, ADDRESS]
    reply_dst: Annotated[bytes, ADDRESS]
    reply_sport: Annotated[int, U16]
    reply_dport: Annotated[int, U16]


FLOW_FIELDS: Final = len(FlowTuple._fields)
"""How many leading fields of a ``FlowTuple`` subclass are the flow tuple."""
