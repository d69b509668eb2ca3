"""How a command line becomes settings: ``KUBENETMON_*`` defaults, secrets kept out of ``--help``, and
relative times (``--from -6h``) that argparse would take for options.

The names themselves (``env_var``, ``is_secret``, ``ENV_PREFIX``) are ``kubenetmon.shared.options``'s, the
one definition the settings use too. Used at the command edge only (``kubenetmon.cli.main`` and the replay
registry): library code never reads the environment.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Final

from kubenetmon.shared.options import ENV_PREFIX, declaration, env_var, is_secret, redact_userinfo

__all__ = [
    "ENV_PREFIX",
    "HelpFormatter",
    "apply_env_defaults",
    "attach_relative_times",
    "env_name",
    "is_secret",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for secrets, empty values and URL passwords (defaults come from the env)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _secret(action) or action.default in (None, "", [], False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text

    def _expand_help(self, action: argparse.Action) -> str:
        return redact_userinfo(super()._expand_help(action))


def _secret(action: argparse.Action) -> bool:
    field = declaration(action)
    return bool(field.metadata["secret"]) if field is not None else is_secret(action.dest)


def env_name(action: argparse.Action) -> str | None:
    """``--nats-url`` -> ``KUBENETMON_NATS_URL``; positionals and help/version have none."""
    names = env_names(action)
    return names[0] if names else None


def env_names(action: argparse.Action) -> list[str]:
    """The variables of every long name of ``action``, the flag's first, then its aliases'."""
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return []
    return [env_var(s) for s in action.option_strings if s.startswith("--")]


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Let ``KUBENETMON_*`` variables supply defaults for every long option of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                apply_env_defaults(sub, environ)
            continue
        name = next((n for n in env_names(action) if n in environ), None)
        if name is None:
            continue
        raw = environ[name]
        if action.nargs == 0:  # store_true / store_false flags
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
            if isinstance(action, argparse._StoreFalseAction):
                value = not value
        elif action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction):
            value = [action.type(v) if action.type else v for v in raw.split(",") if v.strip()]  # type: ignore[operator]
        else:
            try:
                value = action.type(raw) if action.type else raw  # type: ignore[operator]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"{name}={raw!r}: {exc}")
        action.default = value
        action.required = False


_RELATIVE: Final = re.compile(r"-\d+(\.\d+)?[a-z]*")
"""A relative time such as ``-2h`` (``--from -2h``), which argparse would take for an option."""


def attach_relative_times(argv: Sequence[str]) -> list[str]:
    """``--flag -2h`` as ``--flag=-2h``, so a relative time can follow its flag as the README shows."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" not in arg and i + 1 < len(argv) and _RELATIVE.fullmatch(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out
