"""`emberd import`, `emberd pull` and `emberd rm`: verbs that change emberd's store.

They say what they changed: `rm` names a dropped GGUF file it deleted, and
`import` over a name the store holds needs `--force` and says it replaced.

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

from emberd.models.errors import CheckpointError, ModelError
from emberd.models.importer import import_checkpoint, import_gguf, parse_file_type
from emberd.models.pull import PullProgress, pull_model
from emberd.models.store import GGUF_SUFFIX, ModelStores
from emberd.models.terminal import StepPrinter, text_progress
from emberd.server.config import ConfigError, Settings, setting_sources

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    return Settings.from_env(env, models_dir=args.models, registry=getattr(args, "registry", None))


def _stores(settings: Settings) -> ModelStores:
    return ModelStores(settings.models_dir, settings.ollama_models_dir)


def _import(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    source = Path(args.source)
    try:
        settings = _settings(args, env)
        stores = _stores(settings)
        if source.suffix.lower() == GGUF_SUFFIX:
            if args.type is not None:
                raise CheckpointError("a GGUF file is imported as it is; --type is for checkpoints")
            imported = import_gguf(source, args.name, stores, replace=args.force)
        else:
            file_type = parse_file_type(args.type or "f16")
            imported = import_checkpoint(
                source, args.name, stores, file_type, text_progress(sys.stderr), replace=args.force
            )
    except (ConfigError, ModelError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    info = imported.record.info()
    verb = "replaced" if imported.replaced else "imported"
    print(
        f"{verb} {imported.record.name.display} "
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
            print(stores.delete(name).describe())
    except (ConfigError, ModelError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Subparsers, env: Mapping[str, str]) -> None:
    """Add the store verbs to the `emberd` parser."""
    sources = dict(setting_sources())
    models_help = sources["models_dir"].help_text(env)
    imp = subparsers.add_parser(
        "import",
        help="bring in a GGUF file, or convert a Hugging Face sentence-transformers checkpoint",
    )
    imp.add_argument(
        "source", metavar="SOURCE", help="a .gguf file (copied as it is) or a checkpoint directory"
    )
    imp.add_argument("--name", required=True, help="model name, e.g. my-embedder:latest")
    imp.add_argument(
        "--type", choices=("f32", "f16", "q8_0"), help="a checkpoint's weight type (default f16)"
    )
    imp.add_argument(
        "--force", action="store_true", help="replace a model of that name in emberd's store"
    )
    imp.add_argument("--models", metavar="DIR", help=models_help)
    imp.set_defaults(handler=_import)

    pull = subparsers.add_parser("pull", help="pull a model from a registry")
    pull.add_argument("name", metavar="NAME")
    pull.add_argument("--insecure", action="store_true", help="allow plain http registries")
    pull.add_argument("--registry", metavar="URL", help=sources["registry"].help_text(env))
    pull.add_argument("--models", metavar="DIR", help=models_help)
    pull.set_defaults(handler=_pull)

    rm = subparsers.add_parser("rm", help="remove models from emberd's store")
    rm.add_argument("names", metavar="NAME", nargs="+")
    rm.add_argument("--models", metavar="DIR", help=models_help)
    rm.set_defaults(handler=_rm)
