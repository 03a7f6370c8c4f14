"""The `embed-file` subcommand: its arguments, and the messages a user sees."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from emberd.backends.base import BackendError
from emberd.models.errors import ModelError
from emberd.server.bulk import DEFAULT_BATCH, FORMATS, ON_ERROR, OUTPUT_FORMATS
from emberd.server.config import ClientConfig, ConfigError, Settings
from emberd.server.core.errors import CoreError
from emberd.server.http.client import ClientError

if TYPE_CHECKING:
    from emberd.server.bulk.embed_file import EmbedFileRequest

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _request(args: argparse.Namespace) -> EmbedFileRequest:
    from emberd.server.bulk.embed_file import EmbedFileRequest

    return EmbedFileRequest(
        input=Path(args.input),
        out=Path(args.out),
        model=args.model,
        text_field=args.field,
        id_field=args.id_field,
        batch=args.batch,
        dimensions=args.dimensions,
        normalize=not args.no_normalize,
        input_format=args.format,
        output_format=args.out_format,
        on_error=args.on_error,
        server=args.server,
        ray=args.ray is not None,
        ray_address=args.ray or None,
        ray_actors=args.ray_actors,
    )


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # pyarrow and the engine are imported only when the command runs.
    from emberd.server.bulk.embed_file import BadRowError, UsageError, embed_file
    from emberd.server.bulk.interrupt import EXIT_INTERRUPTED, resume_hint
    from emberd.server.bulk.ray_embedder import RayFailure
    from emberd.server.bulk.readers import ReadError

    request = _request(args)
    try:
        settings = Settings.from_env(env, models_dir=args.models)
        summary = embed_file(request, settings, api_key=ClientConfig.from_env(env).api_key)
    except BadRowError as exc:
        print(
            f"Error: {exc}; nothing was written (--on-error skip leaves such rows out)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"\n{resume_hint(request.out)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        UsageError,
        ReadError,
        ConfigError,
        ModelError,
        CoreError,
        BackendError,
        ClientError,
        RayFailure,
    ) as exc:
        message = exc.message if isinstance(exc, CoreError) else str(exc)
        print(f"Error: {message}", file=sys.stderr)
        return 1
    rate = (summary.rows - summary.resumed_from) / max(summary.seconds, 1e-9)
    skipped = f", {summary.skipped:,} skipped" if summary.skipped else ""
    print(
        f"wrote {summary.rows:,} rows{skipped} to {request.out} in {summary.seconds:.1f} s "
        f"({rate:,.0f} rows/s)",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Subparsers, env: Mapping[str, str]) -> None:
    """Add `embed-file` to the `emberd` parser."""
    parser = subparsers.add_parser(
        "embed-file",
        help="embed every record of a JSONL, CSV, Parquet or text file",
        description="Embed a corpus file into Parquet (id or row, embedding, tokens) or .npy. "
        "An interrupted run continues when given the same arguments again.",
    )
    add = parser.add_argument
    add("input", metavar="INPUT", help="the corpus file")
    add("--model", required=True, help="model name, or a path to a GGUF file")
    add("--out", required=True, metavar="OUTPUT", help="output file: .parquet or .npy")
    add("--field", default="text", help="field holding the text (default text)")
    add("--id-field", metavar="NAME", help="field copied to the output's id column")
    add(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"records per request and per checkpoint (default {DEFAULT_BATCH})",
    )
    add("--dimensions", type=int, metavar="D", help="keep the first D dimensions")
    add("--no-normalize", action="store_true", help="keep vectors as the model pools them")
    add("--format", choices=FORMATS, help="input format (default: from the extension)")
    add("--out-format", choices=OUTPUT_FORMATS, help="output format (default: from --out)")
    add(
        "--on-error",
        choices=ON_ERROR,
        default="fail",
        help="a bad row stops the run, writing nothing (fail, default), or is left out (skip)",
    )
    add(
        "--server",
        metavar="ADDRESS",
        help="embed with a running emberd or Ollama at ADDRESS, written as OLLAMA_HOST takes it",
    )
    add(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="embed on Ray actors (a local instance, or the cluster at ADDRESS)",
    )
    add("--ray-actors", type=int, metavar="N", help="actors for --ray (default: CPUs / 2)")
    add("--models", metavar="DIR", help="emberd's model store [env EMBERD_MODELS]")
    parser.set_defaults(handler=_run)
