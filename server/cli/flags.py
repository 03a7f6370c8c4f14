"""The flags of the settings table on a parser, and settings from flags and environment.

`emberd serve` takes one flag per setting; `emberd service install` takes
the same ones, to run serve with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from emberd.server.config import Settings, Source, setting_sources

__all__ = ["add_setting_flag", "build_settings"]


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Settings from the environment with the `serve` flags on top."""
    flags = {name: getattr(args, name) for name, _ in setting_sources()}
    return Settings.from_env(env, **flags)


def add_setting_flag(
    parser: argparse.ArgumentParser, name: str, source: Source, env: Mapping[str, str]
) -> None:
    """Add the flag of one setting, its help showing the default `env` makes."""
    if source.flag_type is bool:  # a switch: present sets its value, absent leaves the variable
        parser.add_argument(
            source.flag,
            dest=name,
            help=source.help_text(env),
            action="store_const",
            const=source.switch,
            default=None,
        )
        return
    metavar = source.metavar or source.flag.lstrip("-").replace("-", "_").upper()
    options: dict[str, Any] = {"dest": name, "help": source.help_text(env), "metavar": metavar}
    if source.repeatable:
        options["action"] = "append"
    else:
        options["type"] = source.flag_type
    if source.choices is not None:
        options["choices"] = source.choices
    parser.add_argument(source.flag, **options)
