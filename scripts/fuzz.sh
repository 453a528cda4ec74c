#!/usr/bin/env bash
# Usage: fuzz.sh [SECONDS]    (`make fuzz`; SECONDS per target, default 60)
# Builds the libFuzzer targets of fuzz/ and runs each in turn for SECONDS, starting from
# the checked-in seeds in fuzz/corpus/<target>/ (read only) and writing what it learns to
# fuzz/work/<target>/ (ignored by git, kept between runs). A crash stops the run with the
# input saved in fuzz/artifacts/<target>/; see README "Fuzzing" for what to do with it.
#
# On stable Rust: cargo-fuzz's sanitizer is off (`-s none`), which needs no nightly flags;
# coverage guidance and comparison tracing work as usual, and debug assertions (overflow
# checks) are on. FUZZ_SANITIZER=address adds AddressSanitizer: it needs `-Zsanitizer`,
# which the stable compiler only takes with RUSTC_BOOTSTRAP=1 (set here for that case),
# and it is also what makes libFuzzer's -malloc_limit_mb bite; without a sanitizer the
# memory bound is -rss_limit_mb.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
sanitizer=${FUZZ_SANITIZER:-none}
targets=(decode_message engine_state checkpoint_file)
build=(-s "$sanitizer" --debug-assertions)
if [[ $sanitizer != none ]]; then
    export RUSTC_BOOTSTRAP=1
fi

cargo fuzz build "${build[@]}"
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    echo "fuzz: $target for ${seconds}s" >&2
    cargo fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 2>&1 | tee "work/$target.log"
done
