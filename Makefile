# pulse — every target documents itself: `make help`.
SHELL := /bin/bash
CARGO ?= cargo
EXAMPLE ?= examples/events.ndjson
FUZZ_SECONDS ?= 60
# Pinned tool versions (scripts/ensure-cargo-tool.sh installs exactly these).
CARGO_DENY_VERSION := 0.20.2
CARGO_FUZZ_VERSION := 0.13.2

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what building and testing need (Debian packages, tansu, moto S3, promtool, PostgreSQL, compose validator); idempotent.
	bash scripts/ensure-build-deps.sh
	bash scripts/ensure-tansu.sh >/dev/null
	bash scripts/ensure-moto.sh >/dev/null
	bash scripts/ensure-promtool.sh
	bash scripts/ensure-postgres.sh
	bash deploy/docker/ensure-compose.sh

.PHONY: build
build: ## Build the pulse binary (release).
	bash scripts/ensure-build-deps.sh
	$(CARGO) build --release -p pulse

.PHONY: run
run: build ## Run the main job: `pulse demo`, the whole pipeline on built-in synthetic events; serves http://127.0.0.1:9464/metrics.
	./target/release/pulse demo

.PHONY: replay
replay: build ## Replay the shipped example (examples/events.ndjson) and print the KPI snapshot.
	./target/release/pulse replay --input $(EXAMPLE)

.PHONY: fmt
fmt: ## Format the code.
	$(CARGO) fmt --all

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, cargo deny (licenses, bans, sources; deny.toml).
	bash scripts/ensure-build-deps.sh
	bash scripts/ensure-cargo-tool.sh cargo-deny $(CARGO_DENY_VERSION)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny check licenses bans sources

.PHONY: test
test: deps lint ## Everything CI runs: set-up, lint, then every unit, property, golden, CLI and Kafka test.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --lib --bins --tests --examples
	$(CARGO) test --workspace --doc

.PHONY: fuzz
fuzz: ## libFuzzer on the event, state and checkpoint decoders, FUZZ_SECONDS (60) per target, stable Rust (README "Fuzzing").
	bash scripts/ensure-build-deps.sh
	bash scripts/ensure-cargo-tool.sh cargo-fuzz $(CARGO_FUZZ_VERSION)
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

.PHONY: golden
golden: ## Rewrite the golden files after an intended change (review the diff!).
	$(CARGO) build -p pulse
	UPDATE_GOLDEN=1 $(CARGO) test -p pulse-tests --test it golden

.PHONY: bench
bench: ## criterion benchmarks of the core (decode, apply, snapshot); see BENCHMARKS.md.
	$(CARGO) bench -p pulse-benches --bench core

.PHONY: bench-load bench-e2e
bench-load: ## Load harness: Kafka ceiling vs `pulse run`, pulse vs Redis HLL, accuracy (~5 min; alias bench-e2e; see BENCHMARKS.md).
	bash benches/harness/run.sh
bench-e2e: bench-load

.PHONY: bench-scale
bench-scale: ## Scale curves: events/s, peak RSS, accuracy for 10^4–10^7 users, 10–1000 features, 1–4 shards (~15 min; knobs: SCALE_ARGS; see BENCHMARKS.md).
	bash scripts/ensure-build-deps.sh
	$(CARGO) build --release -p pulse-benches --bin bench-scale
	mkdir -p target/bench-harness
	set -o pipefail; timeout 3600 ./target/release/bench-scale $(SCALE_ARGS) | tee target/bench-harness/scale.md
