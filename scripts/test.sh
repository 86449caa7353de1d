#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-deps.sh
export PATH="$PATH:/usr/sbin:/sbin"

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
