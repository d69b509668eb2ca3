"""Check a ``kubenetmon`` command line the way the CLI would run it, without running it.

``parse`` builds the real parser, lets the subcommand's module add its flags, applies the
``KUBENETMON_*`` environment exactly as ``kubenetmon.cli.main.main`` does, and parses. ``validate``
then builds every settings dataclass whose flags that command has, which runs their validation: a
value the service would refuse at start fails here, with the service's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
from collections.abc import Sequence
from typing import Any

from kubenetmon.cli import main as cli
from kubenetmon.shared.options import from_args


class InvalidInvocation(AssertionError):
    pass


def parse(argv: Sequence[str], env: dict[str, str]) -> argparse.Namespace:
    parser, subs = cli.build_parser()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen not in cli.COMMANDS:
        raise InvalidInvocation(f"{list(argv)}: {chosen!r} is not a kubenetmon command")
    cli.load(chosen).configure(subs.choices[chosen])
    cli.apply_env_defaults(parser, {k: v for k, v in env.items() if k.startswith(cli.ENV_PREFIX)})
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(list(argv))
    except SystemExit:
        raise InvalidInvocation(f"kubenetmon {' '.join(argv)}: {stderr.getvalue().strip()}") from None


def settings_classes() -> list[type]:
    """Every settings dataclass (fields declared with ``option``) of the kubenetmon modules loaded so far."""
    found: dict[str, type] = {}
    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("kubenetmon."):
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and any("flag" in f.metadata for f in dataclasses.fields(value))
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def validate(args: argparse.Namespace) -> list[Any]:
    """Build each settings dataclass whose every flag this command has; return them."""
    built: list[Any] = []
    for cls in settings_classes():
        flags = [f.metadata["flag"] for f in dataclasses.fields(cls) if "flag" in f.metadata]
        if flags and all(hasattr(args, _dest(flag)) for flag in flags):
            try:
                built.append(from_args(cls, args))
            except Exception as exc:
                raise InvalidInvocation(f"{cls.__name__}: {exc}") from None
    return built


def check(argv: Sequence[str], env: dict[str, str]) -> tuple[argparse.Namespace, list[Any]]:
    """Parse and validate ``kubenetmon <argv>`` with environment ``env``."""
    args = parse(argv, env)
    return args, validate(args)


def setting(built: list[Any], cls_name: str, field: str) -> Any:
    """The value of ``field`` in the built settings object of class ``cls_name``."""
    for obj in built:
        if type(obj).__name__ == cls_name:
            return getattr(obj, field)
    raise AssertionError(f"no {cls_name} among {[type(o).__name__ for o in built]}")
