"""`emberd service`: the systemd unit and launchd agent it writes, and a real start and stop.

The unit is checked by systemd's own parser (`systemd-analyze verify`); the
start and stop run only where a systemd user manager answers (a desktop
session), since a unit cannot start without one.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emberd.server.cli.service import (
    ServiceSpec,
    launchd_plist,
    launchd_plist_path,
    systemd_unit,
)
from tests.support.subprocess_server import free_port

pytestmark = pytest.mark.slow

EMBERD = [sys.executable, "-m", "emberd.server.cli"]


def emberd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EMBERD, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A home under tmp_path and a PATH without systemctl: the unit is written, not started."""
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PATH": str(tmp_path / "no-tools"),
        "OLLAMA_KEEP_ALIVE": "10m",
        "EMBERD_API_KEY": "sk-100%-mine",
        "UNRELATED": "left out",
    }


def test_install_writes_a_unit_that_runs_serve_with_the_users_settings(
    env: dict[str, str], tmp_path: Path
) -> None:
    ran = emberd("service", "install", "--port", "11499", "--origin", "http://my app", env=env)
    unit = tmp_path / "config" / "systemd" / "user" / "emberd.service"
    assert ran.returncode == 1
    assert ran.stdout.startswith(f"wrote {unit}: {sys.executable} -m emberd.server.cli serve")
    assert "systemctl is not on PATH; the service is written but not started" in ran.stderr
    text = unit.read_text()
    python = str(Path(sys.executable).absolute())
    assert (
        f'ExecStart="{python}" "-m" "emberd.server.cli" "serve" '
        '"--port" "11499" "--origin" "http://my app"'
    ) in text.splitlines()
    environment = [line for line in text.splitlines() if line.startswith("Environment=")]
    assert environment == [
        'Environment="EMBERD_API_KEY=sk-100%%-mine"',  # systemd reads %% as %
        'Environment="OLLAMA_KEEP_ALIVE=10m"',
    ]
    assert "WantedBy=default.target" in text and "Restart=on-failure" in text
    assert "TimeoutStopSec=25" in text  # the 10 s grace, and time to unload
    assert unit.stat().st_mode & 0o777 == 0o600  # it may hold API keys


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(env: dict[str, str], tmp_path: Path) -> None:
    emberd("service", "install", "--num-thread", "2", env=env)
    unit = tmp_path / "config" / "systemd" / "user" / "emberd.service"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_a_bad_setting_is_refused_before_anything_is_written(
    env: dict[str, str], tmp_path: Path
) -> None:
    ran = emberd("service", "install", "--keep-alive", "5x", env=env)
    assert ran.returncode == 2
    assert ran.stderr.strip() == 'Error: --keep-alive: time: unknown unit "x" in duration "5x"'
    assert not (tmp_path / "config").exists()


def test_status_and_uninstall(env: dict[str, str], tmp_path: Path) -> None:
    unit = tmp_path / "config" / "systemd" / "user" / "emberd.service"
    missing = emberd("service", "status", env=env)
    assert (missing.returncode, missing.stdout.strip()) == (
        1,
        f"emberd is not installed as a service (no {unit})",
    )
    emberd("service", "install", env=env)
    assert unit.exists()
    gone = emberd("service", "uninstall", env=env)
    assert gone.returncode == 0
    assert gone.stdout.strip() == f"stopped emberd and removed {unit}"
    assert not unit.exists()


def test_the_launchd_agent_runs_the_same_command_and_logs_under_library_logs() -> None:
    spec = ServiceSpec(
        name="emberd",
        command=("/opt/py/bin/python", "-m", "emberd.server.cli", "serve", "--port", "11435"),
        environment=(("OLLAMA_MODELS", "/Volumes/models"),),
        stop_timeout_s=25,
    )
    env = {"HOME": "/Users/ada"}
    agent = plistlib.loads(launchd_plist(spec, env))
    assert agent == {
        "Label": "com.emberd",
        "ProgramArguments": list(spec.command),
        "EnvironmentVariables": {"OLLAMA_MODELS": "/Volumes/models"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ExitTimeOut": 25,
        "StandardOutPath": "/Users/ada/Library/Logs/emberd.log",
        "StandardErrorPath": "/Users/ada/Library/Logs/emberd.log",
    }
    assert launchd_plist_path("emberd", env) == Path(
        "/Users/ada/Library/LaunchAgents/com.emberd.plist"
    )
    # The same words systemd gets: one command for both managers.
    assert systemd_unit(spec).count('"--port" "11435"') == 1


def _user_systemd() -> bool:
    if shutil.which("systemctl") is None:
        return False
    state = subprocess.run(
        ["systemctl", "--user", "is-system-running"], capture_output=True, text=True, check=False
    )
    return state.stdout.strip() in ("running", "degraded")


@pytest.mark.skipif(not _user_systemd(), reason="needs a systemd user manager (a desktop session)")
def test_a_real_start_and_stop_under_systemd() -> None:
    name = f"emberd-test-{os.getpid()}"
    port = free_port()
    env = {**os.environ, "EMBERD_DEFAULT_MODEL": "none"}
    installed = emberd("service", "install", "--name", name, "--port", str(port), env=env)
    try:
        assert installed.returncode == 0, installed.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "Ollama is running":
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        status = emberd("service", "status", "--name", name, env=env)
        assert status.returncode == 0 and f"{name}: running" in status.stdout
    finally:
        removed = emberd("service", "uninstall", "--name", name, env=env)
    assert removed.returncode == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
