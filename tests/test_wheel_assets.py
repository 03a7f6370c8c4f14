"""The page's files ship in the wheel, and an installed copy serves them.

Builds the wheel with pip, unpacks it, and in a fresh process imports
emberd from the unpacked copy (ahead of this checkout) and asks its app for
every file the page loads.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from emberd.server.http import ui

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INSIDE = "emberd/server/http/ui_assets/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("emberd-*.whl")
    return built


def test_every_page_file_is_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packed = {
            name.removeprefix(INSIDE): archive.read(name)
            for name in archive.namelist()
            if name.startswith(INSIDE)
        }
    files = ui.asset_files()
    assert set(packed) == set(files)
    for name, path in files.items():
        assert packed[name] == path.read_bytes(), name


def test_an_installed_copy_serves_the_pages(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from starlette.testclient import TestClient
        from emberd.server.config import Settings
        from emberd.server.http import ui
        from emberd.server.http.app import create_app
        assert ui.__file__.startswith({str(site)!r}), ui.__file__
        settings = Settings.from_env({{"HOME": {str(tmp_path)!r}}})
        client = TestClient(create_app(settings), base_url="http://127.0.0.1")
        for path in ("/ui/", "/docs", *(f"/ui/{{name}}" for name in ui.asset_files())):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
        print(len(ui.asset_files()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) == len(ui.asset_files())
