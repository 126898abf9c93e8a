#!/usr/bin/env bash
# Builds every fuzz target and runs each briefly, so that the targets cannot rot unnoticed:
# a target that no longer builds, panics on a seed, or finds a crash within SECONDS fails the
# script. Committed regression inputs (regressions/<target>/) are replayed first.
#
#   fuzz/smoke.sh [SECONDS]        # default 5 seconds per target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New corpus entries go
# to a temporary directory, never into corpus/. See docs/fuzzing.md.
set -euo pipefail

seconds="${1:-5}"
cd "$(dirname "$0")"

targets=(spiffe_id selector bundle_json jwt_verify csr hpack_authority node_messages admin_messages)

cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
    if [[ -d "regressions/$target" ]]; then
        echo "== $target: replaying regressions/$target"
        cargo +nightly fuzz run "$target" "regressions/$target" -- -runs=0
    fi
    echo "== $target: ${seconds}s from corpus/$target"
    mkdir -p "$scratch/$target"
    status=0
    cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$scratch/$target.log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units)' "$scratch/$target.log" || true
    if [[ "$status" -ne 0 ]]; then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz target $target failed (exit $status)" >&2
        exit 1
    fi
done
echo "all ${#targets[@]} fuzz targets built and ran for ${seconds}s each"
