#!/usr/bin/env bash
# The load harness (`make bench-load`, alias `make bench-e2e`): builds release, then runs
#   1. bench-e2e: tansu + `pulse loadgen`, bare rdkafka consumer (ceiling) vs `pulse run`;
#   2. bench-hll: `pulse replay` vs Redis HyperLogLogs vs exact, on one workload (the Redis
#      consumer decoding with pulse's decoder, then with serde_json::Value);
#   3. bench-hll --redis false: pulse's accuracy at 10^4 and 10^6 users (10^5 is step 2);
#   4. bench-e2e on a small topic with pulse's default 1 s refresh: freshness over 60 probes.
# Results (Markdown tables + one JSON line each) go to stdout and to target/bench-harness/.
# Knobs: E2E_EVENTS (5000000), E2E_USERS (80000), HLL_USERS (100000), ACCURACY="10000 1000000".
# Every process runs under `timeout`; each step has its own bound.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

E2E_EVENTS=${E2E_EVENTS:-5000000}
E2E_USERS=${E2E_USERS:-80000}
HLL_USERS=${HLL_USERS:-100000}
ACCURACY=${ACCURACY:-"10000 1000000"} # 100 000 users is step 2's workload
out=target/bench-harness
mkdir -p "$out"

bash scripts/ensure-build-deps.sh
bash scripts/ensure-tansu.sh >/dev/null
bash benches/harness/ensure-redis.sh
# Two invocations: pulse is built with its own feature set, exactly as `make build` does.
cargo build --release -p pulse
cargo build --release -p pulse-benches --bins

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(rustc --version)"

echo "== 1. ceiling vs pulse run ($E2E_EVENTS events, $E2E_USERS users)"
timeout 1500 target/release/bench-e2e --events "$E2E_EVENTS" --users "$E2E_USERS" \
    --timeout-secs 1400 | tee "$out/e2e.md"

echo "== 2. pulse replay vs Redis HLL ($HLL_USERS users, 30 days)"
for decoder in pulse serde; do
    timeout 1000 target/release/bench-hll --users "$HLL_USERS" --days 30 --decoder "$decoder" \
        --timeout-secs 900 | tee "$out/hll-redis-$decoder.md"
done

echo "== 3. accuracy by population (pulse only; 100 000 users: step 2)"
for users in $ACCURACY; do
    # Fewer sessions per user for the largest population keeps it near 6.5 M events.
    sessions=0.65
    if [[ $users -ge 1000000 ]]; then sessions=0.05; fi
    timeout 1000 target/release/bench-hll --users "$users" --days 30 --sessions "$sessions" \
        --redis false --timeout-secs 900 | tee "$out/accuracy-$users.md"
done

echo "== 4. freshness at the default refresh interval (1 s), 60 probes"
timeout 600 target/release/bench-e2e --events 300000 --users 16000 --refresh-ms 1000 --probes 60 \
    --timeout-secs 500 | tee "$out/freshness-1s.md"
