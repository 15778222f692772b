# Shared paths and helpers for scripts/*; sourced, not run.
TOOLS_DIR=${EGW_TOOLS_DIR:-$HOME/.cache/edge-gateway}
VENV=$TOOLS_DIR/venv
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$VENV/bin:$PATH"

# Version of a package as pinned in Cargo.lock.
lock_version() {
  awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
