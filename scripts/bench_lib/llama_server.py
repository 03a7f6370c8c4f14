"""llama-server from the llama.cpp that the pinned llama-cpp-python vendors: build and run.

The build is done once per llama-cpp-python version under
`<cache>/llama-server-<version>/`: the sdist is fetched with pip, unpacked,
and only the `llama-server` target is built (Release, static, no network
features, no web UI). A finished build is found again by its binary.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.bench_lib.procs import BenchError

PACKAGE = "llama-cpp-python"
_CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    # The web UI would be fetched from the network; an embedding bench needs none.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


@dataclass(frozen=True)
class ServerConfig:
    """The slot count (`-np`) and micro-batch (`-ub`, with `-b` equal) of one run."""

    parallel: int
    ubatch: int

    @property
    def label(self) -> str:
        """As on the command line."""
        return f"-np {self.parallel} -ub {self.ubatch}"


DEFAULT_CONFIG = ServerConfig(parallel=8, ubatch=512)


def pinned_version() -> str:
    """The installed llama-cpp-python version (the project pins it)."""
    return importlib.metadata.version(PACKAGE)


def binary_path(cache: Path, version: str, flavour: str = "") -> Path:
    """Where the build of `version` (a GPU `flavour` such as "cuda", or "") leaves llama-server."""
    build = "build" + (f"-{flavour}" if flavour else "")
    return cache / f"llama-server-{version}" / build / "bin" / "llama-server"


def ensure_binary(
    cache: Path,
    version: str,
    jobs: int,
    say: Callable[[str], None],
    flavour: str = "",
    extra: Sequence[str] = (),
) -> Path:
    """The llama-server binary of `version`, built first if the cache has none.

    `flavour` names a build with the CMake options `extra` (a GPU backend),
    kept beside the CPU one.
    """
    binary = binary_path(cache, version, flavour)
    if binary.is_file():
        return binary
    if shutil.which("cmake") is None:
        raise BenchError("building llama-server needs cmake on PATH")
    work = cache / f"llama-server-{version}"
    work.mkdir(parents=True, exist_ok=True)
    source = _unpacked_sdist(work, version, say)
    build = binary.parent.parent
    log = work / f"{build.name}.log"
    say(f"building llama-server {version} with {jobs} jobs (several minutes; log {log})")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", *generator, "-B", str(build), "-S", str(source), *_CMAKE_OPTIONS, *extra,
    ]  # fmt: skip
    compile_ = ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)]
    with open(log, "ab") as out:
        for command in (configure, compile_):
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise BenchError(f"llama-server build failed: {' '.join(command)} (see {log})")
    if not binary.is_file():
        raise BenchError(f"the build finished without {binary}")
    return binary


def _unpacked_sdist(work: Path, version: str, say: Callable[[str], None]) -> Path:
    """The vendored llama.cpp inside the unpacked sdist, downloading it if needed."""
    root = work / f"llama_cpp_python-{version}"
    source = root / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    archive = work / f"llama_cpp_python-{version}.tar.gz"
    if not archive.is_file():
        say(f"downloading the {PACKAGE} {version} sdist")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{PACKAGE}=={version}",
            "-d",
            str(work),
        ]
        if subprocess.run(command, capture_output=True).returncode != 0 or not archive.is_file():
            raise BenchError(f"could not download the {PACKAGE} {version} sdist")
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    if not (source / "CMakeLists.txt").is_file():
        raise BenchError(f"no vendor/llama.cpp in the {PACKAGE} {version} sdist")
    return source


def server_argv(
    binary: Path,
    model: Path,
    *,
    context: int,
    threads: int,
    pooling: int | None,
    config: ServerConfig,
    port: int,
    clients: int = 32,
) -> list[str]:
    """The command line of llama-server serving `model` for embeddings.

    Each slot gets the model's whole context (`-c` is shared among slots), so
    `-c` is the model's context times the slot count. A keep-alive connection
    holds one HTTP thread (default `-np` + 4 of them), and connections beyond
    that wait until one is idle for 5 s: `--threads-http` is sized for the
    bench's `clients`.
    """
    options = {
        "--model": str(model),
        "--host": "127.0.0.1",
        "--port": str(port),
        "-c": str(context * config.parallel),
        "-np": str(config.parallel),
        "-b": str(config.ubatch),
        "-ub": str(config.ubatch),
        "-t": str(threads),
        "-tb": str(threads),
        "--threads-http": str(max(clients, config.parallel) + 4),
    }
    argv = [str(binary), "--embeddings", "--no-webui"]
    for flag, value in options.items():
        argv += [flag, value]
    if pooling is not None and pooling in POOLING_NAMES:
        argv += ["--pooling", POOLING_NAMES[pooling]]
    return argv


def sweep_grid(
    context: int,
    longest_tokens: int = 1,
    parallels: Sequence[int] = (1, 4, 8, 32),
    ubatches: Sequence[int] = (256, 512, 1024),
) -> list[ServerConfig]:
    """Settings worth a try: the micro-batch holds the longest sequence, divides by -np
    (context creation aborts otherwise) and fits in the total context."""
    return [
        ServerConfig(p, u)
        for p in parallels
        for u in ubatches
        if longest_tokens <= u <= context * p and u % p == 0
    ]
