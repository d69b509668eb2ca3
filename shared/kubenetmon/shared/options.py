"""How settings dataclasses meet the command line: one field, one flag, one parser, one message.

Every flag of every command is a settings field declared with ``option(...)``: its flag (and aliases), help
text, value kind and default. From that, ``add_arguments`` adds the flags to an argparse parser (every flag
also reads ``KUBENETMON_<FLAG>``, named by ``env_var``, through the CLI), ``from_args`` parses and validates
them into the frozen dataclass, and ``describe``/``reference`` render the README's configuration tables from
the declarations, so the documentation cannot drift from the code. A command's own flags are ``native``:
argparse converts them and shows their default, exactly as a hand-written ``add_argument`` would.

Every bad value raises ``ConfigError`` naming the flag, its environment variable and what was expected;
a secret (``is_secret``: the one definition) never shows its value. The value kinds live in ``values``.
This module reads no environment and knows no concern: the concerns live in ``settings``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, TypeVar

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.values import (
    DURATION_EXPECTED,
    PARSERS,
    format_duration,
    format_value,
    parse_bool,
    parse_duration,
    parse_durations,
    parse_float,
    parse_int,
    parse_list,
    parse_size,
)

__all__ = [  # the value kinds are re-exported: settings and tests name them through options
    "DURATION_EXPECTED",
    "ENV_PREFIX",
    "PARSERS",
    "TOP_LEVEL",
    "add_arguments",
    "declaration",
    "describe",
    "env_var",
    "flag_of",
    "format_duration",
    "format_value",
    "from_args",
    "invalid",
    "is_secret",
    "option",
    "parse_bool",
    "parse_duration",
    "parse_durations",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_size",
    "parse_value",
    "redact_userinfo",
    "reference",
    "require",
    "require_readable",
]

T = TypeVar("T")

_USERINFO: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]*@")
"""The password of a URL's user information (URLs may carry credentials: never show them)."""
ENV_PREFIX: Final = "KUBENETMON_"
"""Every ``--some-flag`` may also come from ``KUBENETMON_SOME_FLAG``."""
_SECRET_WORDS: Final = ("password", "token", "secret", "nkey")


_NATIVE_TYPES: Final[dict[str, Callable[[str], Any] | None]] = {
    "str": None,
    "int": int,
    "float": float,
    "switch": None,
    "append": None,
}
"""Kinds of a ``native`` option, with the converter argparse applies (its own messages, as today)."""
_NATIVE_ONLY: Final = ("switch", "append")
TOP_LEVEL: Final = ""
"""``option(group=TOP_LEVEL)``: a flag among the parser's own options, in no group."""
_DECLARED: Final[weakref.WeakKeyDictionary[argparse.Action, dataclasses.Field[Any]]] = (
    weakref.WeakKeyDictionary()
)


def option(
    default: T,
    *,
    flag: str,
    help: str,
    kind: str = "str",
    choices: tuple[str, ...] = (),
    secret: bool | None = None,
    aliases: tuple[str, ...] = (),
    native: bool = False,
    metavar: str | None = None,
    dest: str | None = None,
    required: bool = False,
    group: str | None = None,
    repr: bool = True,
) -> T:
    """A settings field bound to ``flag``; ``kind`` picks the parser (see ``PARSERS``).

    ``secret`` (default: ``is_secret(flag)``) keeps the value out of ``--help``, messages and the README
    (``repr=False`` out of the dataclass's ``repr`` too).
    ``aliases`` are other names of the flag, each with its own ``KUBENETMON_*`` variable (the flag's wins).
    A ``native`` option is a command's own flag that argparse converts and holds the default of (shown
    as ``(default: X)``; kinds ``str``, ``int``, ``float``, ``switch``, ``append``), with an optional
    ``metavar``, ``dest`` and ``required`` (``switch`` and ``append`` are always native); the others are
    parsed and validated by ``from_args``; an ``append`` value is split at commas too. ``group`` puts
    the flag in another ``--help`` section than its class's (``TOP_LEVEL``: the parser's own options).
    """
    native = native or kind in _NATIVE_ONLY
    if kind not in PARSERS or (native and kind not in _NATIVE_TYPES):
        raise ValueError(f"unknown option kind {kind!r}{' (native)' if native else ''}")
    meta = {
        "flag": flag,
        "help": help,
        "kind": kind,
        "choices": choices,
        "secret": is_secret(flag) if secret is None else secret,
        "aliases": aliases,
        "native": native,
        "metavar": metavar,
        "dest": dest or _dest(flag),
        "required": required,
        "group": group,
    }
    return dataclasses.field(default=default, repr=repr, metadata=meta)


def env_var(flag: str) -> str:
    """``--nats-url`` -> ``KUBENETMON_NATS_URL``: the one way a flag names its environment variable."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def is_secret(name: str) -> bool:
    """Whether a flag or its destination (``--nats-password``, ``nats_token``) names a secret."""
    return any(word in name.lower() for word in _SECRET_WORDS)


def flag_of(cls: type, name: str) -> str:
    """The flag of field ``name``, for messages."""
    for f in dataclasses.fields(cls):
        if f.name == name and "flag" in f.metadata:
            return str(f.metadata["flag"])
    return name


def redact_userinfo(text: str) -> str:
    """``scheme://user:password@host`` anywhere in ``text`` -> ``scheme://user:***@host``."""
    return _USERINFO.sub(r"\g<head>***@", text)


def invalid(cls: type, name: str, value: object, expected: str) -> ConfigError:
    """The one message shape for a bad setting: flag (env var): expected X, got Y."""
    flag = flag_of(cls, name)
    shown = "***" if _is_secret(cls, name) else redact_userinfo(repr(value))
    return ConfigError(f"{flag} ({env_var(flag)}): expected {expected}, got {shown}")


def require_readable(files: Iterable[tuple[str, str]]) -> None:
    """Raise ``ConfigError`` for the first ``(flag, path)`` whose path is set but cannot be read."""
    for flag, path in files:
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{flag} ({env_var(flag)}): cannot read {path!r}")


def require(obj: object, name: str, ok: bool, expected: str) -> None:
    """Raise ``ConfigError`` for field ``name`` of ``obj`` unless ``ok``."""
    if not ok:
        raise invalid(type(obj), name, getattr(obj, name), expected)


def _is_secret(cls: type, name: str) -> bool:
    return any(f.name == name and f.metadata.get("secret") for f in dataclasses.fields(cls))


def _options(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, title: str | None, hidden: Collection[str] = ()
) -> None:
    """Add one flag per option of settings class ``cls`` to ``parser``, under an argument group
    (``title``) or, with ``title=None``, among the parser's own options (see ``option(group=...)``).

    The flags of the fields named in ``hidden`` are accepted (and validated) but not shown in ``--help``."""
    groups: dict[str, Any] = {TOP_LEVEL: parser}
    for f in _options(cls):
        meta = f.metadata
        names = (meta["flag"], *meta["aliases"])
        name = meta["group"] if meta["group"] is not None else title or TOP_LEVEL
        target = groups.get(name) or groups.setdefault(name, parser.add_argument_group(name))
        kwargs = _native_kwargs(f) if meta["native"] else _settings_kwargs(f)
        if f.name in hidden:
            kwargs["help"] = argparse.SUPPRESS
        action = target.add_argument(*names, **kwargs)
        _DECLARED[action] = f


def _settings_kwargs(f: dataclasses.Field[Any]) -> dict[str, Any]:
    meta = f.metadata
    text = meta["help"]  # the choices show in the metavar, as argparse shows a native flag's
    shown = "" if meta["secret"] else format_value(meta["kind"], f.default)
    if shown:
        text += f" (default: {shown})"
    return {"dest": meta["dest"], "default": None, "metavar": _metavar(meta), "help": text}


def _metavar(meta: Mapping[str, Any]) -> str:
    """What ``--help`` shows for a value: the declared word, the choices as argparse shows them, or the
    kind (``DURATION``, ``SIZE``, ``INT``…)."""
    if meta["metavar"]:
        return str(meta["metavar"])
    if meta["choices"]:
        return "{" + ",".join(meta["choices"]) + "}"
    return str(meta["kind"]).upper()


def _native_kwargs(f: dataclasses.Field[Any]) -> dict[str, Any]:
    meta = f.metadata
    kwargs: dict[str, Any] = {"dest": meta["dest"], "help": meta["help"]}
    if meta["kind"] == "switch":
        return kwargs | {"action": "store_true", "default": bool(f.default)}
    kwargs |= {"metavar": meta["metavar"], "required": meta["required"]}
    if meta["kind"] == "append":
        values: Any = f.default
        return kwargs | {"action": "append", "default": list(values or ())}
    kwargs |= {"default": f.default, "type": _NATIVE_TYPES[meta["kind"]]}
    return kwargs | ({"choices": meta["choices"]} if meta["choices"] else {})


def declaration(action: argparse.Action) -> dataclasses.Field[Any] | None:
    """The settings field that declared ``action`` through ``add_arguments`` (None: declared otherwise)."""
    return _DECLARED.get(action)


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build settings ``cls`` from parsed flags (missing flags keep their defaults), then validate."""
    values: dict[str, Any] = {}
    for f in _options(cls):
        raw = getattr(args, f.metadata["dest"], None)
        if raw is None:
            continue
        if f.metadata["kind"] == "append":
            values[f.name] = tuple(part.strip() for v in raw for part in v.split(",") if part.strip())
        elif f.metadata["native"] or not isinstance(raw, str):
            values[f.name] = raw
        else:
            values[f.name] = parse_value(cls, f, raw)
    values.update(overrides)
    return cls(**values)


def parse_value(cls: type, f: dataclasses.Field[Any], raw: str) -> Any:
    meta = f.metadata
    try:
        value = PARSERS[meta["kind"]](raw)
    except ValueError as exc:
        raise invalid(cls, f.name, raw, str(exc)) from None
    if meta["choices"] and value not in meta["choices"]:
        raise invalid(cls, f.name, raw, "one of " + ", ".join(meta["choices"]))
    return value


def describe(f: dataclasses.Field[Any], *, one_of: str = "one of ") -> tuple[str, str, str, str]:
    """A flag as the README lists it, from its declaration: flag, environment variable, default, meaning."""
    meta = f.metadata
    if meta["secret"]:
        default = "(secret)"
    elif meta["native"]:
        default = _native_default(meta["kind"], f.default)
    else:
        default = format_value(meta["kind"], f.default)
    text = meta["help"]
    if meta["choices"] and not meta["native"]:
        text += f" ({one_of}{', '.join(meta['choices'])})"
    for alias in meta["aliases"]:
        text += f"; alias `{alias}` (`{env_var(alias)}`)"
    return meta["flag"], env_var(meta["flag"]), default or "-", text


def _native_default(kind: str, value: Any) -> str:
    if kind in _NATIVE_ONLY or value is None:
        return ""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def reference(*classes: type) -> str:
    """The configuration reference as a Markdown table (flag, environment variable, default, meaning)."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for cls in classes:
        for f in _options(cls):
            flag, env, default, text = describe(f, one_of="")
            lines.append(f"| `{flag}` | `{env}` | `{default}` | {text} |")
    return "\n".join(lines) + "\n"
