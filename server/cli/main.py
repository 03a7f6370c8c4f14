"""The `emberd` command: `serve`, and client verbs that talk to a running server.

Each subcommand is one registration function in `COMMANDS`; it adds its
parser and sets `handler`, a function of the parsed arguments and the
environment that returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeAlias

from emberd.models.terminal import human_bytes
from emberd.server import __version__
from emberd.server.cli import embed_file, store_verbs
from emberd.server.config import ClientConfig, ConfigError, Settings, Source, setting_sources
from emberd.server.core.durations import format_duration
from emberd.server.http.api_types import RunningModel, ShowResponse
from emberd.server.http.client import ClientError, EmberdClient

__all__ = [
    "COMMANDS",
    "build_parser",
    "build_settings",
    "configure_logging",
    "format_table",
    "human_number",
    "human_time",
    "main",
    "run_server",
]

log = logging.getLogger("emberd")

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace, Mapping[str, str]], int]

TRACE = 5  # uvicorn's level below DEBUG

# ---------------------------------------------------------------------------
# Text formatting shared by the verbs


def format_table(
    headers: Sequence[str] | None, rows: Sequence[Sequence[str]], indent: str = ""
) -> str:
    """Left-aligned columns separated by at least four spaces, like `ollama list`.

    With `headers` None only the rows are printed.
    """
    table = [list(row) for row in ([headers] if headers is not None else []) + list(rows)]
    if not table:
        return ""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in table
    ]
    return "\n".join(indent + line.rstrip() for line in lines)


def human_number(count: int) -> str:
    """Parameter counts: `22.57M`, `7.2B`, `512K`."""
    for suffix, scale, digits in (("B", 10**9, 1), ("M", 10**6, 2), ("K", 10**3, 0)):
        if count >= scale:
            text = f"{count / scale:.{digits}f}"
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return text + suffix
    return str(count)


def _human_duration(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        whole = int(seconds)
        return "1 second" if whole == 1 else f"{whole} seconds"
    minutes = int(seconds // 60)
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds // (3600 * 24 * 365))} years"


def human_time(moment: datetime | None, now: datetime | None = None, never: str = "Never") -> str:
    """`2 days ago`, `4 minutes from now`; `Forever` beyond twenty years ahead."""
    if moment is None:
        return never
    now = now or datetime.now(timezone.utc)
    delta = (now - moment).total_seconds()
    if delta < -20 * 365 * 24 * 3600:
        return "Forever"
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"


def _short_id(digest: str) -> str:
    return digest.removeprefix("sha256:").removeprefix("sha256-")[:12]


# ---------------------------------------------------------------------------
# serve


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Settings from the environment with the `serve` flags on top."""
    flags = {name: getattr(args, name) for name, _ in setting_sources()}
    return Settings.from_env(env, **flags)


def configure_logging(level: str) -> None:
    """Log to stderr at `level` (one of LOG_LEVELS)."""
    logging.addLevelName(TRACE, "TRACE")
    numeric = TRACE if level == "trace" else logging.getLevelName(level.upper())
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # The GGUF writer narrates every file it writes at info level.
    logging.getLogger("gguf").setLevel(max(numeric, logging.WARNING))


def run_server(settings: Settings) -> int:
    """Serve the HTTP API until interrupted (SIGTERM: in-flight requests get the grace)."""
    from emberd.server.http.app import create_app
    from emberd.server.http.serving import serve

    configure_logging(settings.log_level)
    log.info(
        "emberd %s listening on %s (models: %s; ollama models: %s; keep_alive %s)",
        __version__,
        settings.url,
        settings.models_dir,
        settings.ollama_models_dir,
        format_duration(settings.keep_alive),
    )
    serve(create_app(settings, prepare_default_model=True), settings)
    return 0


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = build_settings(args, env)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return run_server(settings)


def _add_setting_flag(parser: argparse.ArgumentParser, name: str, source: Source) -> None:
    if source.flag_type is bool:  # a switch: present sets its value, absent leaves the variable
        parser.add_argument(
            source.flag,
            dest=name,
            help=source.help_text(),
            action="store_const",
            const=source.switch,
            default=None,
        )
        return
    metavar = source.metavar or source.flag.lstrip("-").replace("-", "_").upper()
    options: dict[str, Any] = {"dest": name, "help": source.help_text(), "metavar": metavar}
    if source.repeatable:
        options["action"] = "append"
    else:
        options["type"] = source.flag_type
    if source.choices is not None:
        options["choices"] = source.choices
    parser.add_argument(source.flag, **options)


def _add_serve(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("serve", help="start the server")
    for name, source in setting_sources():  # one flag per setting, from the settings table
        _add_setting_flag(parser, name, source)
    parser.set_defaults(handler=_serve)


# ---------------------------------------------------------------------------
# Client verbs


def _client(env: Mapping[str, str]) -> EmberdClient:
    config = ClientConfig.from_env(env)
    return EmberdClient(config.base_url, api_key=config.api_key)


def _list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    models = _client(env).list_models()
    rows = [
        (m.name, _short_id(m.digest), human_bytes(m.size), human_time(m.modified_at))
        for m in models
    ]
    print(format_table(("NAME", "ID", "SIZE", "MODIFIED"), rows))
    return 0


def _processor(model: RunningModel) -> str:
    if model.size_vram == 0:
        return "100% CPU"
    if model.size_vram == model.size:
        return "100% GPU"
    if model.size == 0 or model.size_vram > model.size:
        return "Unknown"
    gpu = round(100 * model.size_vram / model.size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def _until(model: RunningModel, now: datetime) -> str:
    if model.expires_at is not None and model.expires_at < now:
        return "Stopping..."
    return human_time(model.expires_at, now)


def _ps(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    now = datetime.now(timezone.utc)
    rows = [
        (
            m.name,
            _short_id(m.digest),
            human_bytes(m.size),
            _processor(m),
            str(m.context_length or ""),
            _until(m, now),
        )
        for m in _client(env).running_models()
    ]
    print(format_table(("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"), rows))
    return 0


def _show_model_rows(result: ShowResponse) -> list[tuple[str, str]]:
    info = result.model_info
    arch = str(info.get("general.architecture") or result.details.family or "")
    count = info.get("general.parameter_count")
    params = (
        human_number(int(count))
        if isinstance(count, (int, float)) and not isinstance(count, bool) and math.isfinite(count)
        else result.details.parameter_size
    )
    rows = [
        ("architecture", arch),
        ("parameters", params),
        ("context length", str(info.get(f"{arch}.context_length", ""))),
        ("embedding length", str(info.get(f"{arch}.embedding_length", ""))),
        ("quantization", result.details.quantization_level),
    ]
    return [(key, value) for key, value in rows if value]


def _show(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    result = _client(env).show(args.name)
    sections = [("Model", _show_model_rows(result))]
    if result.capabilities:
        sections.append(("Capabilities", [(c, "") for c in result.capabilities]))
    parameters = [line.split(None, 1) for line in result.parameters.splitlines() if line.strip()]
    if parameters:
        sections.append(("Parameters", [(p[0], p[1] if len(p) > 1 else "") for p in parameters]))
    for title, rows in sections:
        print(f"  {title}")
        print(format_table(None, rows, indent="    "))
        print()
    return 0


def _embed(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    print(_client(env).embed(args.name, args.text).rstrip("\n"))
    return 0


def _add_client_verbs(subparsers: Subparsers) -> None:
    subparsers.add_parser("list", aliases=["ls"], help="list models").set_defaults(handler=_list)
    subparsers.add_parser("ps", help="list loaded models").set_defaults(handler=_ps)
    show = subparsers.add_parser("show", help="show a model's details")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=_show)
    embed = subparsers.add_parser("embed", help="embed texts and print the JSON response")
    embed.add_argument("name", metavar="NAME")
    embed.add_argument("text", metavar="TEXT", nargs="+")
    embed.set_defaults(handler=_embed)


# ---------------------------------------------------------------------------
# Entry point

# Each entry adds one or more subcommands; new verbs are added here.
COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_serve,
    _add_client_verbs,
    store_verbs.register,
    embed_file.register,
]


def build_parser() -> argparse.ArgumentParser:
    """The `emberd` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="emberd", description="A local embedding server.")
    parser.add_argument("--version", action="version", version=f"emberd {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the `emberd` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 1
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args, os.environ if env is None else env)
    except ClientError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
