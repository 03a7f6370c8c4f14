"""`emberd import`, `emberd pull` and `emberd rm`: verbs that change emberd's store.

They work on the store directly (the same directory a running server reads),
so no server needs to be running; writes are atomic, so one that is sees a
model appear whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO, TypeAlias

from emberd.models.errors import ModelError
from emberd.models.importer import import_checkpoint, parse_file_type
from emberd.models.pull import PullProgress, pull_model
from emberd.models.store import ModelStores
from emberd.models.terminal import StepPrinter, text_progress
from emberd.server.config import ConfigError, Settings, setting_sources

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    return Settings.from_env(env, models_dir=args.models, registry=getattr(args, "registry", None))


def _stores(settings: Settings) -> ModelStores:
    return ModelStores(settings.models_dir, settings.ollama_models_dir)


def _import(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = _settings(args, env)
        file_type = parse_file_type(args.type)
        imported = import_checkpoint(
            Path(args.source),
            args.name,
            _stores(settings),
            file_type,
            text_progress(sys.stderr),
        )
    except (ConfigError, ModelError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    info = imported.record.info()
    print(
        f"imported {imported.record.name.display} "
        f"({info.architecture}, {info.parameter_size} parameters, {info.file_type})"
    )
    return 0


def _pull(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = _settings(args, env)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return pull_cli(args.name, _stores(settings), settings.registry, insecure=args.insecure)


def _printer(out: TextIO) -> Callable[[PullProgress], None]:
    """Pull progress for a terminal: one line per step and per layer (see StepPrinter)."""
    printer = StepPrinter(out)

    def show(event: PullProgress) -> None:
        if event.digest:
            printer.transfer(event.status, event.completed, event.total)
        else:
            printer.step(event.status)

    return show


def pull_cli(
    name: str,
    stores: ModelStores,
    registry_url: str,
    *,
    insecure: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`emberd pull NAME`: pull with progress on `out`; 0 on success, 1 with `Error: ...`."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pull_model(name, stores, registry_url, _printer(out), insecure=insecure)
    except (ModelError, OSError) as exc:
        print(f"Error: {exc}", file=err, flush=True)
        return 1
    return 0


def _rm(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = _settings(args, env)
        stores = _stores(settings)
        for name in args.names:
            stores.delete(name)
            print(f"deleted '{name}'")
    except (ConfigError, ModelError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Subparsers) -> None:
    """Add the store verbs to the `emberd` parser."""
    sources = dict(setting_sources())
    models_help = sources["models_dir"].help_text()
    imp = subparsers.add_parser(
        "import", help="convert a Hugging Face sentence-transformers checkpoint into a model"
    )
    imp.add_argument("source", metavar="DIR", help="checkpoint directory")
    imp.add_argument("--name", required=True, help="model name, e.g. my-embedder:latest")
    imp.add_argument(
        "--type", default="f16", choices=("f32", "f16", "q8_0"), help="weight type (default f16)"
    )
    imp.add_argument("--models", metavar="DIR", help=models_help)
    imp.set_defaults(handler=_import)

    pull = subparsers.add_parser("pull", help="pull a model from a registry")
    pull.add_argument("name", metavar="NAME")
    pull.add_argument("--insecure", action="store_true", help="allow plain http registries")
    pull.add_argument("--registry", metavar="URL", help=sources["registry"].help_text())
    pull.add_argument("--models", metavar="DIR", help=models_help)
    pull.set_defaults(handler=_pull)

    rm = subparsers.add_parser("rm", help="remove models from emberd's store")
    rm.add_argument("names", metavar="NAME", nargs="+")
    rm.add_argument("--models", metavar="DIR", help=models_help)
    rm.set_defaults(handler=_rm)
