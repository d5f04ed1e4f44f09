#!/usr/bin/env bash
# Start a real OpenAI-compatible LLM server (llama.cpp, CPU only) on
# 127.0.0.1:PORT, serving a tiny randomly initialised llama model.
#
#   tests/fakes/tinyllm/serve.sh PORT            # foreground; exec's the server, so the PID you started is the server
#   tests/fakes/tinyllm/serve.sh --setup-only    # only build what is missing (venv, server, model), then exit
#
# Two back ends, both from PyPI's llama-cpp-python 0.3.36 sdist (llama.cpp vendored inside it):
#   TINYLLM_SERVER=llama-server (default)  llama.cpp's own C++ server, built from the vendored source
#       (~6 min on 2 cores). Parallel slots + continuous batching, usage in the last stream chunk,
#       /health, /metrics, /slots.
#   TINYLLM_SERVER=python                  `python -m llama_cpp.server` (FastAPI), pip-built (~4 min).
#       One request at a time (others queue), no usage in streamed responses, no /health.
#
# Everything lives in $TINYLLM_HOME (default /tmp/tinyllm) and is created if missing:
#   venv/               python venv: gguf (to write the model) [+ llama-cpp-python[server] for python]
#   bin/llama-server    the C++ server binary (llama-server back end)
#   tiny.gguf           written by make_model.py (~1 s); delete it to regenerate
#
# Other knobs (all optional):
#   TINYLLM_PYTHON      python used to create the venv                     (python3)
#   TINYLLM_MODEL_ARGS  extra args for make_model.py, e.g. "--n-embd 1024 --n-layer 8 --n-ff 2816"
#   TINYLLM_ALIAS       model id listed by /v1/models                        (tinyllm)
#   TINYLLM_N_CTX       context window of one request                        (4096)
#   TINYLLM_PARALLEL    llama-server slots = requests computed at once       (4)
#   TINYLLM_THREADS     CPU threads for the forward pass                     (1)
#   TINYLLM_API_KEY     if set, requests need "Authorization: Bearer $TINYLLM_API_KEY"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOME_DIR="${TINYLLM_HOME:-/tmp/tinyllm}"
BACKEND="${TINYLLM_SERVER:-llama-server}"
PY="${TINYLLM_PYTHON:-python3}"
VENV="$HOME_DIR/venv"
MODEL="$HOME_DIR/tiny.gguf"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
GGUF_VERSION="0.19.0"
N_CTX="${TINYLLM_N_CTX:-4096}"
THREADS="${TINYLLM_THREADS:-1}"
PARALLEL="${TINYLLM_PARALLEL:-4}"
ALIAS="${TINYLLM_ALIAS:-tinyllm}"

usage() { echo "usage: $0 PORT | --setup-only   (TINYLLM_SERVER=llama-server|python)" >&2; exit 2; }
[ $# -ge 1 ] || usage
PORT="$1"
[ "$PORT" = "--setup-only" ] || [[ "$PORT" =~ ^[0-9]+$ ]] || usage
case "$BACKEND" in llama-server|python) ;; *) usage ;; esac
log() { echo "[tinyllm] $*" >&2; }
mkdir -p "$HOME_DIR"

# CPU only: every GPU back end, BLAS, curl/openssl and the unused parts off.
CPU_CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF \
-DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF"

# 1. venv with gguf (model writer); the python back end also needs llama-cpp-python[server]
need_import="gguf"
[ "$BACKEND" = python ] && need_import="gguf, llama_cpp.server"
if ! "$VENV/bin/python" -c "import $need_import" >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || { log "creating venv $VENV"; "$PY" -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "gguf==$GGUF_VERSION" >&2
  if [ "$BACKEND" = python ]; then
    log "pip-building llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION from source (~4 min on 2 cores)"
    CMAKE_ARGS="$CPU_CMAKE_ARGS -DLLAVA_BUILD=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
        "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" >&2
  fi
fi

# 2. llama-server binary, built from the llama.cpp that the llama-cpp-python sdist vendors
SERVER_BIN="$HOME_DIR/bin/llama-server"
if [ "$BACKEND" = llama-server ] && ! "$SERVER_BIN" --version >/dev/null 2>&1; then
  log "building llama-server from the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (~6 min on 2 cores; log: $HOME_DIR/build.log)"
  SRC="$HOME_DIR/src"
  rm -rf "$SRC"; mkdir -p "$SRC" "$HOME_DIR/bin"
  {
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SRC"
    tar -xzf "$SRC"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION".tar.gz -C "$SRC"
    LC="$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    # shellcheck disable=SC2086
    cmake -S "$LC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF $CPU_CMAKE_ARGS \
      -DGGML_CCACHE=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=ON \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF   # no web UI: it would be fetched from a hub
    cmake --build "$SRC/build" --target llama-server -j "$(nproc)"
  } > "$HOME_DIR/build.log" 2>&1 || { log "build failed, see $HOME_DIR/build.log"; tail -20 "$HOME_DIR/build.log" >&2; exit 1; }
  cp "$SRC/build/bin/llama-server" "$SERVER_BIN.tmp" && mv "$SERVER_BIN.tmp" "$SERVER_BIN"
  rm -rf "$SRC"
fi

# 3. the model
if [ ! -s "$MODEL" ]; then
  # shellcheck disable=SC2086
  "$VENV/bin/python" "$HERE/make_model.py" "$MODEL.tmp" --n-ctx "$N_CTX" ${TINYLLM_MODEL_ARGS:-} >&2
  mv "$MODEL.tmp" "$MODEL"
fi

if [ "$PORT" = "--setup-only" ]; then log "ready in $HOME_DIR ($BACKEND)"; exit 0; fi
log "serving $MODEL as '$ALIAS' via $BACKEND on http://127.0.0.1:$PORT/v1"

if [ "$BACKEND" = llama-server ]; then
  args=(-m "$MODEL" --host 127.0.0.1 --port "$PORT" --alias "$ALIAS"
        --parallel "$PARALLEL" --ctx-size "$((N_CTX * PARALLEL))" --threads "$THREADS" --threads-batch "$THREADS"
        --no-webui --metrics)
  [ -n "${TINYLLM_API_KEY:-}" ] && args+=(--api-key "$TINYLLM_API_KEY")
  exec "$SERVER_BIN" "${args[@]}"
fi

args=(--model "$MODEL" --model_alias "$ALIAS" --host 127.0.0.1 --port "$PORT"
      --n_ctx "$N_CTX" --n_threads "$THREADS" --n_threads_batch "$THREADS"
      --interrupt_requests False   # default True: a new request would cut off the one streaming
      --logits_all False           # default True: keeps logits of every prompt token, unneeded
      --verbose False)
[ -n "${TINYLLM_API_KEY:-}" ] && args+=(--api_key "$TINYLLM_API_KEY")
exec "$VENV/bin/python" -m llama_cpp.server "${args[@]}"
