"""A runner: the process that owns llama.cpp for one model.

`python -m emberd.backends.runner_process` is started by backends/runner.py.

The server starts runners ahead of need (backends/runner.py); each waits,
with llama.cpp already initialised, until it is told to load a file. From
then on it serves that one model until it is told to stop or its server
goes away. Whatever llama.cpp does to the process (an assert, an uncaught
C++ exception, a crash in a GPU kernel) ends this process alone.

Two socket channels, handed over by backends/handover.py:

- the decode channel, served on the main thread: `load`, then `embed`
  batches and `embed_text` lone texts (tokenized and decoded in one step)
  one at a time, each answer carrying its request's id, then `stop`;
- the tokenize channel, served on a thread of its own so that tokenizing a
  new request never waits for a decode in progress; one exchange carries
  the texts of all the requests that arrived together (backends/gathering.py),
  with an error per text that failed.

The runner opens the model file itself and checks it is the version the
server vetted (size, modification time, inode) before anything reads it;
llama.cpp then loads that open file, not whatever the path names by then.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emberd.backends import handover, ipc
from emberd.backends.base import BackendError, LoadOptions
from emberd.backends.sequences import fit_sequence
from emberd.models.errors import ModelError
from emberd.models.gguf_checks import check_loadable
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.store import FileVersion

log = logging.getLogger("emberd.runner")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one model over the two inherited channels; the exit status is 0 on `stop`."""
    parser = argparse.ArgumentParser(prog="emberd runner")
    # Inherited descriptors (POSIX); without them the channels come on stdin (Windows).
    parser.add_argument("--decode-fd", type=int)
    parser.add_argument("--tokenize-fd", type=int)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s emberd runner[{os.getpid()}] %(message)s",
    )
    decode, tokenize = handover.receive(args.decode_fd, args.tokenize_fd)
    from emberd.backends import llama_cpp

    # What computes, as plain data: the server never maps llama.cpp itself.
    compute = llama_cpp.compute_devices()
    ipc.send(decode, {"op": "hello", "devices": len(compute.gpus), "compute": compute.as_dict()})
    try:
        return _serve(decode, tokenize)
    except ipc.ChannelClosed:
        return 0  # the server has gone: nothing left to serve


def _serve(decode: socket.socket, tokenize: socket.socket) -> int:
    from emberd.backends.cpu_load import CpuLoad
    from emberd.backends.llama_cpp import LlamaCppModel

    header, _ = ipc.recv(decode)
    if header.get("op") != "load":
        return 0  # told to stop before loading: the spare runner at shutdown
    try:
        named = Path(str(header["path"]))
        path = _open_vetted(named, _version(header.get("version")))
        cpu_load = CpuLoad(counters=_counters_with_server())
        model = LlamaCppModel(path, LoadOptions(**header["options"]), cpu_load, named.name)
    except (BackendError, ModelError, OSError, KeyError, TypeError, ValueError) as exc:
        ipc.send(decode, {"error": _reason(exc)})
        return 0
    ipc.send(decode, {"facts": _facts(model), "limits": _limits(model)})
    threading.Thread(
        target=_serve_tokenize, args=(tokenize, model), name="emberd-tokenize", daemon=True
    ).start()
    while True:
        header, payload = ipc.recv(decode)
        op = header.get("op")
        if op == "embed":
            reply, vectors = _embed(model, header, payload)
        elif op == "embed_text":
            reply, vectors = _embed_text(model, header)
        else:
            return 0
        ipc.send(decode, {**reply, "id": header.get("id")}, vectors)


def _counters_with_server() -> Callable[[], tuple[float, float]]:
    """The CPU counters, with the server's time counted as this runner's own.

    The server parses and answers the requests this runner decodes for: its
    work is part of the same job, not load from other programs that should
    cost a decode its threads. Other runners' decodes do count as others'.
    """
    import psutil

    from emberd.backends.cpu_load import cpu_counters

    server = psutil.Process(os.getppid())

    def counters() -> tuple[float, float]:
        busy, own = cpu_counters()
        try:
            times = server.cpu_times()
        except psutil.Error:  # the server has gone; this runner ends soon
            return busy, own
        return busy, own + times.user + times.system

    return counters


def _version(raw: Any) -> FileVersion | None:
    if raw is None:
        return None
    size, mtime_ns, inode = (int(part) for part in raw)
    return size, mtime_ns, inode


def _open_vetted(path: Path, version: FileVersion | None) -> Path:
    """The path of an open descriptor of `path`, once it is the version the server vetted.

    The descriptor stays open for the process's life, so llama.cpp and the
    header checks read the very file that was checked, whatever happens to
    the path meanwhile.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    st = os.fstat(fd)
    if version is not None and (st.st_size, st.st_mtime_ns, st.st_ino) != version:
        os.close(fd)
        raise BackendError("the model file changed after it was checked; try again")
    opened = _descriptor_path(fd) or path
    check_loadable(read_gguf_info(opened))
    return opened


def _descriptor_path(fd: int) -> Path | None:
    """A path that opens descriptor `fd` itself (Linux, macOS); None elsewhere."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        candidate = Path(folder) / str(fd)
        if candidate.exists():
            return candidate
    return None


def _facts(model: Any) -> dict[str, Any]:
    facts = model.facts
    return {
        "n_embd": facts.n_embd,
        "n_ctx_train": facts.n_ctx_train,
        "n_vocab": facts.n_vocab,
        "pooling": int(facts.pooling),
        "prefix": list(facts.prefix),
        "suffix": list(facts.suffix),
        "gpu_layers": facts.gpu_layers,
        "n_layers": facts.n_layers,
        "n_cls_out": facts.n_cls_out,
        "pair_separator": list(facts.pair_separator),
        "rerank_template": facts.rerank_template,
        "decode_budget": facts.decode_budget,
    }


def _limits(model: Any) -> dict[str, int]:
    return {
        "max_batch_tokens": model.max_batch_tokens(),
        "max_batch_sequences": model.max_batch_sequences(),
        "parallel_decodes": model.parallel_decodes(),
    }


def _embed(model: Any, header: ipc.Header, payload: bytes) -> tuple[ipc.Header, bytes]:
    """Batches of token sequences, decoded side by side (`_decoded`)."""
    sequences = ipc.unpack_sequences(header["lengths"], payload)
    batches, start = [], 0
    for count in header["batches"]:
        batches.append(sequences[start : start + count])
        start += count
    return _decoded(model, batches)


def _embed_text(model: Any, header: ipc.Header) -> tuple[ipc.Header, bytes]:
    """A lone text tokenized, fitted and decoded: `_decoded`'s answer, and its token count."""
    facts = model.facts
    try:
        tokens = model.tokenize(str(header["text"]))
        limit, truncate = int(header["limit"]), bool(header["truncate"])
        sequence = fit_sequence(tokens, 0, limit, truncate, facts.prefix, facts.suffix)
    except BackendError as exc:
        return {"error": ipc.pack_error(exc)}, b""
    reply, vectors = _decoded(model, [[sequence]])
    return {**reply, "tokens": len(sequence)}, vectors


def _decoded(model: Any, batches: list[list[list[int]]]) -> tuple[ipc.Header, bytes]:
    """One `embed_parallel`: every batch's vectors in one payload, or its error."""
    try:
        results = model.embed_parallel(batches)
    except BackendError as exc:
        return {"error": ipc.pack_error(exc)}, b""
    shapes: list[list[int] | ipc.Header] = []
    blobs = []
    for result in results:
        if isinstance(result, BackendError):
            shapes.append(ipc.pack_error(result))
        else:
            shapes.append([int(result.shape[0]), int(result.shape[1])])
            blobs.append(result.tobytes())
    return {"results": shapes}, b"".join(blobs)


def _serve_tokenize(channel: socket.socket, model: Any) -> None:
    """Answer tokenize and detokenize requests, each tagged with its id, in order."""
    try:
        while True:
            header, payload = ipc.recv(channel)
            reply: ipc.Header = {"id": header.get("id")}
            out = b""
            try:
                if header.get("op") == "tokenize":
                    lists, reply["failed"] = _tokenize_each(model, header["texts"])
                    reply["lengths"], out = ipc.pack_sequences(lists)
                else:
                    (tokens,) = ipc.unpack_sequences(header["lengths"], payload)
                    reply["text"] = model.detokenize(tokens)
            except (BackendError, KeyError, TypeError, ValueError) as exc:
                reply["error"] = str(exc)
            ipc.send(channel, reply, out)
    except ipc.ChannelClosed:
        return


def _tokenize_each(model: Any, texts: list[Any]) -> tuple[list[list[int]], list[Any]]:
    """Token ids of each text, and [index, error] of each that failed (its ids empty):
    the texts of several requests come together, and each request gets its own answer."""
    lists: list[list[int]] = []
    failed: list[Any] = []
    for index, text in enumerate(texts):
        try:
            lists.append(model.tokenize(str(text)))
        except BackendError as exc:
            lists.append([])
            failed.append([index, ipc.pack_error(exc)])
    return lists, failed


def _reason(exc: BaseException) -> str:
    """What went wrong, without the store path a message may carry."""
    return str(getattr(exc, "reason", None) or exc)


if __name__ == "__main__":
    sys.exit(main())
