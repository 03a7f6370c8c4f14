"""`emberd service install|status|uninstall`: emberd as a background service at login.

On Linux a systemd user unit (`~/.config/systemd/user/emberd.service`, logs
in the journal: `journalctl --user -u emberd`), on macOS a launchd agent
(`~/Library/LaunchAgents/com.emberd.plist`, logs in
`~/Library/Logs/emberd.log`). Either runs this installation's `emberd serve`
with the serve flags given to `install` and the settings' environment
variables set where `install` runs (a bad value is refused before anything
is written), and restarts it if it fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from emberd.server.cli.flags import add_setting_flag, build_settings
from emberd.server.config import ConfigError, Settings, setting_sources

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_NAME = "emberd"
LAUNCHD_PREFIX = "com."  # the agent of service NAME is com.NAME
# Variables the service keeps besides the settings' own: Ollama's debug switch.
EXTRA_VARIABLES = ("OLLAMA_DEBUG",)
# How long the service manager waits after SIGTERM, beyond the shutdown grace.
STOP_MARGIN_S = 15


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: the command line and the environment it gets."""

    name: str
    command: tuple[str, ...]  # absolute interpreter path, then its arguments
    environment: tuple[tuple[str, str], ...]
    stop_timeout_s: int


def service_spec(
    name: str, serve_args: Sequence[str], env: Mapping[str, str], settings: Settings
) -> ServiceSpec:
    """This installation's `emberd serve` with `serve_args` and the settings' variables in `env`."""
    variables = {source.variable for _, source in setting_sources()} | set(EXTRA_VARIABLES)
    kept = tuple(sorted((k, v) for k, v in env.items() if k in variables and v.strip()))
    python = str(Path(sys.executable).absolute())
    command = (python, "-m", "emberd.server.cli", "serve", *serve_args)
    return ServiceSpec(name, command, kept, int(settings.shutdown_grace) + STOP_MARGIN_S)


# -- systemd -------------------------------------------------------------------------


def _systemd_quote(word: str) -> str:
    """One word of ExecStart= or one Environment= assignment, as systemd reads them."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped.replace("$", "$$")}"'


def systemd_unit(spec: ServiceSpec) -> str:
    """The text of a systemd user unit that runs `spec` (output goes to the journal)."""
    lines = [
        "[Unit]",
        "Description=emberd embedding server",
        "",
        "[Service]",
        "Type=exec",
        "ExecStart=" + " ".join(_systemd_quote(word) for word in spec.command),
        *(f"Environment={_systemd_quote(f'{key}={value}')}" for key, value in spec.environment),
        "Restart=on-failure",
        "RestartSec=5",
        f"TimeoutStopSec={spec.stop_timeout_s}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def systemd_unit_path(name: str, env: Mapping[str, str]) -> Path:
    """Where the user's systemd manager looks for the unit `name`."""
    config = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(config) / "systemd" / "user" / f"{name}.service"


# -- launchd -------------------------------------------------------------------------


def launchd_log_path(env: Mapping[str, str]) -> Path:
    """Where the agent's output goes: the user's logs, where Console.app looks."""
    return _home(env) / "Library" / "Logs" / "emberd.log"


def launchd_plist(spec: ServiceSpec, env: Mapping[str, str]) -> bytes:
    """The property list of a launchd agent that runs `spec` at login and after failures."""
    log = str(launchd_log_path(env))
    agent: dict[str, object] = {
        "Label": LAUNCHD_PREFIX + spec.name,
        "ProgramArguments": list(spec.command),
        "EnvironmentVariables": dict(spec.environment),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ExitTimeOut": spec.stop_timeout_s,
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    return plistlib.dumps(agent)


def launchd_plist_path(name: str, env: Mapping[str, str]) -> Path:
    """Where the user's launchd agents live."""
    return _home(env) / "Library" / "LaunchAgents" / f"{LAUNCHD_PREFIX}{name}.plist"


# -- the verbs -----------------------------------------------------------------------


class ServiceError(Exception):
    """A service manager that refused or is missing; the message says what to run."""


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise ServiceError(f"{command[0]} is not on PATH")
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


def _must(command: Sequence[str]) -> None:
    done = _run(command)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise ServiceError(f"`{' '.join(command)}` failed: {reason[-1] if reason else done}")


def _launchd_target(name: str) -> str:
    return f"gui/{os.getuid()}/{LAUNCHD_PREFIX}{name}"


def _install(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        settings = build_settings(args, env)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    spec = service_spec(args.name, _serve_args(args), env, settings)
    if sys.platform == "darwin":
        path = launchd_plist_path(args.name, env)
        _write(path, launchd_plist(spec, env))
        launchd_log_path(env).parent.mkdir(parents=True, exist_ok=True)
        _run(["launchctl", "bootout", _launchd_target(args.name)])  # an older one, if loaded
        steps = [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(path)]]
        logs = f"logs: {launchd_log_path(env)}"
    else:
        path = systemd_unit_path(args.name, env)
        _write(path, systemd_unit(spec).encode())
        unit = f"{args.name}.service"
        steps = [["systemctl", "--user", "daemon-reload"],
                 ["systemctl", "--user", "enable", "--now", unit]]  # fmt: skip
        logs = f"logs: journalctl --user -u {args.name}"
    print(f"wrote {path}: {' '.join(spec.command)}")
    try:
        for step in steps:
            _must(step)
    except ServiceError as exc:
        print(f"Error: {exc}; the service is written but not started", file=sys.stderr)
        return 1
    print(f"started {args.name} at {settings.url}, and at each login ({logs})")
    return 0


def _installed(name: str, env: Mapping[str, str]) -> Path | None:
    """The service file of `name` on this platform; None, saying so, if there is none."""
    darwin = sys.platform == "darwin"
    path = launchd_plist_path(name, env) if darwin else systemd_unit_path(name, env)
    if path.exists():
        return path
    print(f"{name} is not installed as a service (no {path})")
    return None


def _status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    darwin = sys.platform == "darwin"
    path = _installed(args.name, env)
    if path is None:
        return 1
    try:
        if darwin:
            running = _run(["launchctl", "print", _launchd_target(args.name)]).returncode == 0
            logs = str(launchd_log_path(env))
        else:
            state = _run(["systemctl", "--user", "is-active", f"{args.name}.service"])
            running = state.stdout.strip() == "active"
            logs = f"journalctl --user -u {args.name}"
    except ServiceError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: {'running' if running else 'not running'} ({path}; logs: {logs})")
    return 0 if running else 3


def _uninstall(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    darwin = sys.platform == "darwin"
    path = _installed(args.name, env)
    if path is None:
        return 0
    stops = (
        [["launchctl", "bootout", _launchd_target(args.name)]]
        if darwin
        else [["systemctl", "--user", "disable", "--now", f"{args.name}.service"]]
    )
    for stop in stops:
        try:
            _run(stop)  # not loaded or no manager: removing the file is what remains
        except ServiceError as exc:
            print(f"note: {exc}", file=sys.stderr)
    path.unlink()
    if not darwin:
        with contextlib.suppress(ServiceError):
            _run(["systemctl", "--user", "daemon-reload"])
    print(f"stopped {args.name} and removed {path}")
    return 0


def _write(path: Path, data: bytes) -> None:
    """Write the service file readable by its owner only (it may hold API keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _serve_args(args: argparse.Namespace) -> list[str]:
    """The serve flags given to `install`, as `emberd serve` takes them."""
    words: list[str] = []
    for name, source in setting_sources():
        value = getattr(args, name, None)
        if value is None:
            continue
        if source.flag_type is bool:
            words.append(source.flag)
        elif source.repeatable:
            for item in value:
                words += [source.flag, str(item)]
        else:
            words += [source.flag, str(value)]
    return words


def register(subparsers: Subparsers, env: Mapping[str, str]) -> None:
    """Add `service install|status|uninstall` to the `emberd` parser."""
    service = subparsers.add_parser(
        "service", help="run emberd in the background at login (systemd or launchd)"
    )
    verbs = service.add_subparsers(title="service commands", metavar="COMMAND", required=True)
    install = verbs.add_parser("install", help="install and start the service; takes serve's flags")
    for name, source in setting_sources():
        add_setting_flag(install, name, source, env)
    for verb, handler, text in (
        (install, _install, None),
        (verbs.add_parser("status", help="whether the service runs"), _status, None),
        (verbs.add_parser("uninstall", help="stop and remove the service"), _uninstall, None),
    ):
        verb.add_argument("--name", default=DEFAULT_NAME, help=text or "the service's name")
        verb.set_defaults(handler=handler)
