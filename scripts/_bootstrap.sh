# Sourced by scripts/gateway and scripts/test: find Python >= 3.12, create or refresh .venv
# from requirements.lock, then export VENV_PY. Re-installs only when the lock file changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements.lock"
STAMP="$VENV/.lock.sha256"

_py_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

find_python() {
  local c
  for c in "${MCPGW_PYTHON:-}" python3.13 python3.12 python3; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && _py_ok "$(command -v "$c")" && { command -v "$c"; return; }
  done
  # pyenv keeps 3.12/3.13 installed but not on PATH when the global version is 3.11.
  local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv /opt/pyenv /usr/local/pyenv)
  command -v pyenv >/dev/null 2>&1 && roots=("$(pyenv root)" "${roots[@]}")
  for r in "${roots[@]}"; do
    [ -n "$r" ] && [ -d "$r/versions" ] || continue
    for c in $(ls -d "$r"/versions/3.* 2>/dev/null | sort -rV); do
      _py_ok "$c/bin/python" && { echo "$c/bin/python"; return; }
    done
  done
  for c in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [ -x "$c" ] && _py_ok "$c" && { echo "$c"; return; }
  done
  return 1
}

want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || ! _py_ok "$VENV/bin/python" || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  PY="$(find_python)" || {
    echo "error: no Python >= 3.12 found (tried python3.13, python3.12, python3, pyenv versions)." >&2
    echo "       Install one, or point MCPGW_PYTHON at it." >&2
    exit 1
  }
  if [ ! -x "$VENV/bin/python" ] || ! _py_ok "$VENV/bin/python"; then
    echo "==> creating $VENV with $PY ($("$PY" -V 2>&1))" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  echo "==> installing pinned dependencies from requirements.lock (one-time, about a minute)" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on -r "$LOCK" >&2 \
    || { echo "error: dependency install failed; see pip's output above" >&2; exit 1; }
  echo "$want" > "$STAMP"
  echo "==> environment ready" >&2
fi
VENV_PY="$VENV/bin/python"
export VENV_PY ROOT
