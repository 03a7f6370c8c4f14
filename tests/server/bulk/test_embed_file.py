"""`emberd embed-file` on the real llama.cpp backend and the tiny GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emberd.server.cli.main import main
from tests.support.bulk_files import corpus, read_output, store_env, vectors_of, write_corpus
from tests.support.gguf_patch import rewritten_copy
from tests.support.harness import TINY, LiveServer, ModelFiles, Stores

BATCH = 8


def _embed(stores: Stores, *args: str, env: dict[str, str] | None = None) -> int:
    return main(["embed-file", *args], env={**store_env(stores), **(env or {})})


def _server_vectors(server: LiveServer, texts: list[str]) -> np.ndarray:
    """The server's vectors, asked for in the same chunks embed-file sends."""
    parts = [server.vectors(TINY, texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".txt"])
def test_each_format_gives_the_servers_vectors(
    suffix: str, stores: Stores, server: LiveServer, tmp_path: Path
) -> None:
    texts = corpus(30)
    ids = None if suffix == ".txt" else [f"doc-{i}" for i in range(30)]
    source = write_corpus(tmp_path / f"in{suffix}", texts, ids)
    out = tmp_path / "out.parquet"
    id_args = [] if ids is None else ["--id-field", "id"]
    assert (
        _embed(
            stores, str(source), "--model", TINY, "--out", str(out), "--batch", str(BATCH), *id_args
        )
        == 0
    )
    table = read_output(out)
    assert table.column_names == ["row" if ids is None else "id", "embedding", "tokens"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    key = table.column(table.column_names[0]).to_pylist()
    assert key == (list(range(30)) if ids is None else ids)
    np.testing.assert_array_equal(vectors_of(table), _server_vectors(server, texts))
    first = server.post_ok("/api/embed", {"model": TINY, "input": texts[0]})
    assert table.column("tokens").to_pylist()[0] == first["prompt_eval_count"]
    assert not (tmp_path / "out.parquet.partial").exists()


def test_integer_ids_stay_integers_and_blank_lines_are_not_rows(
    stores: Stores, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 7, "text": "why"}\n\n{"id": 9, "text": "sky"}\n')
    out = tmp_path / "out.parquet"
    assert _embed(stores, str(source), "--model", TINY, "--out", str(out), "--id-field", "id") == 0
    table = read_output(out)
    assert table.schema.field("id").type == pa.int64()
    assert table.column("id").to_pylist() == [7, 9]
    plain = tmp_path / "rows.parquet"
    assert _embed(stores, str(source), "--model", TINY, "--out", str(plain)) == 0
    assert read_output(plain).column("row").to_pylist() == [0, 1]


def test_npy_holds_the_same_vectors(stores: Stores, tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(20))
    parquet, npy = tmp_path / "out.parquet", tmp_path / "out.npy"
    for out in (parquet, npy):
        assert _embed(stores, str(source), "--model", TINY, "--out", str(out), "--batch", "6") == 0
    matrix = np.load(npy)
    assert matrix.dtype == np.float32 and matrix.shape == (20, 32)
    np.testing.assert_array_equal(matrix, vectors_of(read_output(parquet)))


def test_dimensions_and_no_normalize(stores: Stores, tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(5))
    cut, raw = tmp_path / "cut.parquet", tmp_path / "raw.parquet"
    assert _embed(stores, str(source), "--model", TINY, "--out", str(cut), "--dimensions", "8") == 0
    assert _embed(stores, str(source), "--model", TINY, "--out", str(raw), "--no-normalize") == 0
    short = vectors_of(read_output(cut))
    assert short.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(np.linalg.norm(vectors_of(read_output(raw)), axis=1), 1.0)


def test_a_gguf_path_is_a_model(stores: Stores, model_files: ModelFiles, tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(10))
    by_name, by_path = tmp_path / "name.parquet", tmp_path / "path.parquet"
    assert _embed(stores, str(source), "--model", TINY, "--out", str(by_name)) == 0
    assert _embed(stores, str(source), "--model", str(model_files.mean), "--out", str(by_path)) == 0
    assert read_output(by_name).equals(read_output(by_path))


def test_through_a_running_server(stores: Stores, server: LiveServer, tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "in.jsonl", corpus(25), list(range(25)))
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    common = ["--model", TINY, "--id-field", "id", "--batch", str(BATCH)]
    assert _embed(stores, str(source), "--out", str(local), *common) == 0
    assert _embed(stores, str(source), "--out", str(remote), "--server", server.url, *common) == 0
    here, there = read_output(local), read_output(remote)
    assert there.column("id").to_pylist() == list(range(25))
    np.testing.assert_array_equal(vectors_of(there), vectors_of(here))
    assert there.column("tokens").null_count == 25  # /api/embed counts per request only


def test_a_server_error_is_reported(
    stores: Stores, server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(3))
    out = tmp_path / "out.parquet"
    assert (
        _embed(stores, str(source), "--model", "nope", "--out", str(out), "--server", server.url)
        == 1
    )
    assert 'model "nope" not found' in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "out.parquet.partial").exists()


BAD_JSONL = (
    "\n".join(
        [
            '{"text": "why is the sky blue"}',
            '{"text": "grass"}',
            '{"body": "no text here"}',
            '{"text": "sun"}',
            '{"text": 12}',
            '{"text": "sea"}',
            "not json",
            '["a", "list"]',
            '{"text": "tree"}',
        ]
    )
    + "\n"
)


def test_bad_rows_fail_with_their_line_and_write_nothing(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(BAD_JSONL)
    out = tmp_path / "out.parquet"
    assert _embed(stores, str(source), "--model", TINY, "--out", str(out), "--batch", "2") == 1
    assert 'line 3: field "text" is missing' in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "out.parquet.partial").exists()


def test_bad_rows_are_skipped_and_reported(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(BAD_JSONL)
    out = tmp_path / "out.parquet"
    assert (
        _embed(
            stores,
            str(source),
            "--model",
            TINY,
            "--out",
            str(out),
            "--batch",
            "2",
            "--on-error",
            "skip",
        )
        == 0
    )
    err = capsys.readouterr().err
    for expected in (
        'skipped line 3: field "text" is missing',
        'skipped line 5: field "text" is not a string',
        "skipped line 7: not valid JSON",
        "skipped line 8: not a JSON object",
    ):
        assert expected in err
    assert "4 skipped" in err
    assert read_output(out).column("row").to_pylist() == [0, 1, 3, 5, 8]


def test_bad_csv_and_parquet_rows(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,why\n2,sky,extra\n3,blue\n")
    out = tmp_path / "out.parquet"
    args = ["--model", TINY, "--out", str(out), "--id-field", "id"]
    assert _embed(stores, str(source), *args) == 1
    assert "line 3: 3 fields where the header has 2" in capsys.readouterr().err
    assert _embed(stores, str(source), *args, "--on-error", "skip") == 0
    assert read_output(out).column("id").to_pylist() == ["1", "3"]
    table = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["why", None, "sky"]}), table)
    assert _embed(stores, str(table), "--model", TINY, "--out", str(out)) == 1
    assert 'row 1: field "text" is null' in capsys.readouterr().err


def test_input_problems_are_reported_before_loading(
    stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_corpus(tmp_path / "in.csv", corpus(3), [1, 2, 3])
    out = str(tmp_path / "out.parquet")
    assert _embed(stores, str(source), "--model", TINY, "--out", out, "--field", "body") == 1
    assert 'no column "body"' in capsys.readouterr().err
    assert _embed(stores, str(tmp_path / "missing.jsonl"), "--model", TINY, "--out", out) == 1
    assert "no such file" in capsys.readouterr().err
    assert _embed(stores, str(source), "--model", "nope", "--out", out) == 1
    assert "model 'nope' not found" in capsys.readouterr().err


def test_a_changed_input_starts_over(stores: Stores, tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(4))
    out = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    stale = {"fingerprint": {"input": "elsewhere"}, "state": {"chunks": 9}}
    (partial / "checkpoint.json").write_text(json.dumps(stale))
    assert _embed(stores, str(source), "--model", TINY, "--out", str(out)) == 0
    assert len(read_output(out)) == 4


@pytest.mark.slow
def test_a_model_that_crashes_mid_run_is_reported_and_the_finished_chunks_are_kept(
    model_files: ModelFiles, stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Read as SentencePiece without byte tokens, any character outside the
    # vocabulary aborts llama.cpp's tokenizer (in the model's runner).
    crasher = rewritten_copy(model_files.mean, tmp_path / "crasher.gguf",
                             {"tokenizer.ggml.model": "llama"})  # fmt: skip
    texts = corpus(24)
    texts[17] = "Zebra"
    source = write_corpus(tmp_path / "in.jsonl", texts, list(range(24)))
    out = tmp_path / "out.parquet"
    args = [str(source), "--model", str(crasher), "--out", str(out), "--batch", "4"]
    assert _embed(stores, *args, "--id-field", "id") == 1
    error = capsys.readouterr().err
    assert "stopped unexpectedly: aborted (SIGABRT)" in error, error
    assert not out.exists()
    kept = sorted((tmp_path / "out.parquet.partial").glob("*.parquet"))
    assert len(kept) == 4  # the chunks before the one holding "Zebra"
