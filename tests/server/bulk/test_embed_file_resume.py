"""An embed-file run interrupted (Ctrl-C, a second Ctrl-C, a kill) continues to the file an
uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from emberd.server.cli.main import main
from tests.support.bulk_files import corpus, read_output, store_env, vectors_of, write_corpus
from tests.support.harness import DEADLINE_S, TINY, Stores, wait_until

pytestmark = pytest.mark.slow  # starts child processes

REPO = Path(__file__).resolve().parents[3]
ROWS = 6000
BATCH = 16


def _chunks_done(partial: Path) -> int:
    try:
        return int(json.loads((partial / "checkpoint.json").read_text())["state"]["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args: list[str], env: dict[str, str], partial: Path, after: int, sig: int) -> int:
    """Run embed-file in a subprocess; send `sig` once `after` chunks are done; its exit code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "emberd.server.cli", "embed-file", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # A shell that runs the suite in the background ignores SIGINT, and its
        # children inherit that: give the run the Ctrl-C a terminal would.
        preexec_fn=_interruptible,
    )
    try:
        wait_until(
            lambda: _chunks_done(partial) >= after or process.poll() is not None,
            deadline_s=6 * DEADLINE_S,
        )
        process.send_signal(sig)
        _, err = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert _chunks_done(partial) < ROWS // BATCH, "the run ended before it was interrupted"
    if sig == signal.SIGINT:
        assert b"run the same command again to continue" in err, err
    return process.returncode


def test_an_interrupted_run_ends_like_an_uninterrupted_one(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_corpus(tmp_path / "in.jsonl", corpus(ROWS, seed=3), list(range(ROWS)))
    common = ["--model", TINY, "--id-field", "id", "--batch", str(BATCH)]
    reference = tmp_path / "reference.parquet"
    assert (
        main(["embed-file", str(source), "--out", str(reference), *common], env=store_env(stores))
        == 0
    )

    out = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    args = [str(source), "--out", str(out), *common]
    env = {**os.environ, **store_env(stores)}
    assert _interrupt(args, env, partial, 20, signal.SIGINT) == 130
    first = _chunks_done(partial)
    assert _interrupt(args, env, partial, first + 20, signal.SIGKILL) == -signal.SIGKILL
    assert not out.exists()
    assert _chunks_done(partial) > first

    capsys.readouterr()
    assert main(["embed-file", *args], env=store_env(stores)) == 0
    assert "continuing after" in capsys.readouterr().err
    resumed, whole = read_output(out), read_output(reference)
    assert resumed.equals(whole)
    assert vectors_of(resumed).tobytes() == vectors_of(whole).tobytes()
    assert resumed.column("id").to_pylist() == list(range(ROWS))
    assert np.isfinite(vectors_of(resumed)).all()
    assert not partial.exists()


def test_a_second_ctrl_c_ends_the_run_at_once_and_loses_nothing_done(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Chunks long enough that the second Ctrl-C most likely lands inside one.
    source = write_corpus(tmp_path / "in.jsonl", corpus(ROWS, seed=5), list(range(ROWS)))
    out = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    args = [
        str(source),
        "--out",
        str(out),
        "--model",
        TINY,
        "--id-field",
        "id",
        "--batch",
        str(ROWS // 4),
    ]
    env = {**os.environ, **store_env(stores)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emberd.server.cli", "embed-file", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_interruptible,
    )
    watchdog = threading.Timer(6 * DEADLINE_S, process.kill)  # a hung run ends the readline
    watchdog.start()
    try:
        wait_until(
            lambda: _chunks_done(partial) >= 1 or process.poll() is not None,
            deadline_s=6 * DEADLINE_S,
        )
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        lines = iter(process.stderr.readline, b"")
        assert any(b"stopping after the chunk in hand" in line for line in lines)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=DEADLINE_S)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert b"run the same command again to continue" in err, err
    done = _chunks_done(partial)
    assert 1 <= done < 4

    assert main(["embed-file", *args], env=store_env(stores)) == 0
    assert f"continuing after {done * (ROWS // 4):,} rows" in capsys.readouterr().err
    assert read_output(out).column("id").to_pylist() == list(range(ROWS))
