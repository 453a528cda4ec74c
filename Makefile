# pulse — every target documents itself: `make help`.
SHELL := /bin/bash
CARGO ?= cargo
EXAMPLE ?= examples/events.ndjson

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the pulse binary (release).
	$(CARGO) build --release -p pulse

.PHONY: run
run: build ## Run the main job on the shipped example: replay examples/events.ndjson.
	./target/release/pulse replay --input $(EXAMPLE)

.PHONY: fmt
fmt: ## Format the code.
	$(CARGO) fmt --all

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: lint ## Everything CI runs: lint, then every unit, property, golden and CLI test.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

.PHONY: golden
golden: ## Rewrite the golden files after an intended change (review the diff!).
	$(CARGO) build -p pulse
	UPDATE_GOLDEN=1 $(CARGO) test -p pulse-tests --test it golden

.PHONY: bench
bench: ## criterion benchmarks of the core (decode, apply, snapshot); see BENCHMARKS.md.
	$(CARGO) bench -p pulse-benches --bench core
