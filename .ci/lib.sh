# Helpers shared by .ci/run, .ci/demo and .ci/scaleout. Sourced, not executed.
step() { printf '\n==== %s ====\n' "$*"; }
require() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool (this machine kind ships it; install it)" >&2; exit 1; }
  done
}
