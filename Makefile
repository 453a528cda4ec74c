# pulse — every target documents itself: `make help`.
SHELL := /bin/bash
CARGO ?= cargo
EXAMPLE ?= examples/events.ndjson
FUZZ_SECONDS ?= 60
# Pinned tool versions (scripts/ensure-cargo-tool.sh installs exactly these).
CARGO_DENY_VERSION := 0.20.2
CARGO_FUZZ_VERSION := 0.13.2
# Where tests/src/skip.rs logs every skipped check; `make test` empties it first and
# reports it last, because cargo's own summary counts a skipped test as passed.
SKIP_LOG := $(CURDIR)/target/skipped-checks.txt

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what building and testing need (Debian packages, tansu, moto S3, promtool, PostgreSQL, compose validator, hadolint, kubectl, systemd-analyze); idempotent.
	bash scripts/ensure-build-deps.sh
	bash scripts/ensure-tansu.sh >/dev/null
	bash scripts/ensure-moto.sh >/dev/null
	bash scripts/ensure-promtool.sh
	bash scripts/ensure-postgres.sh
	bash deploy/docker/ensure-compose.sh
	bash scripts/ensure-deploy-tools.sh

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
test: deps lint ## Everything CI runs: set-up, lint, then every unit, property, golden, CLI and Kafka test; ends with the skipped checks.
	mkdir -p $(dir $(SKIP_LOG)) && : > $(SKIP_LOG)
	$(CARGO) build --workspace --bins
	SKIPPED_CHECKS_LOG=$(SKIP_LOG) $(CARGO) test --workspace --lib --bins --tests --examples
	SKIPPED_CHECKS_LOG=$(SKIP_LOG) $(CARGO) test --workspace --doc
	@bash scripts/report-skips.sh $(SKIP_LOG)

.PHONY: fuzz
fuzz: ## libFuzzer on the event, state and checkpoint decoders, FUZZ_SECONDS (60) per target, stable Rust (README "Fuzzing").
	bash scripts/ensure-build-deps.sh
	bash scripts/ensure-cargo-tool.sh cargo-fuzz $(CARGO_FUZZ_VERSION)
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

.PHONY: golden
golden: ## Rewrite the golden files after an intended change, show what changed (review the diff!), check they now pass.
	$(CARGO) build -p pulse
	@# A test that rewrote its file fails saying so (tests/it/golden.rs): expected here.
	-UPDATE_GOLDEN=1 $(CARGO) test -p pulse-tests --test it golden
	git --no-pager diff --stat -- tests/golden
	$(CARGO) test -p pulse-tests --test it golden

.PHONY: fuzz-seeds
fuzz-seeds: ## Rewrite the fuzz seeds that a state or checkpoint format change made unreadable (review, commit).
	$(CARGO) build -p pulse
	@# The test that rewrote a seed fails saying so (tests/it/fuzz_corpus.rs): expected here.
	-$(CARGO) test -p pulse-tests --test it fuzz_corpus::regenerate_stale_seeds -- --ignored --exact
	git --no-pager diff --stat -- fuzz/corpus
	$(CARGO) test -p pulse-tests --test it fuzz_corpus

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
