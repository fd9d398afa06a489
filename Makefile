# The JIT system's entry points. `make run` starts everything on an embedded
# NATS; `make test` runs every test with -race against real NATS.
GO        ?= go
BIN       ?= $(CURDIR)/bin
DATA_DIR  ?= $(CURDIR)/data
CONFIG    ?= examples/jit.yaml
NATS_LISTEN ?= 127.0.0.1:4222
HTTP_LISTEN ?= 127.0.0.1:8080
# Every module of the workspace (go.work); `./...` does not cross modules.
PKGS      := ./pkg/... ./pkg/events/... ./services/requester/... ./services/policy/... \
             ./services/approval/... ./services/revoker/... ./services/auditor/... ./cmd/... ./examples/...
BINARIES  := ./cmd/jitd ./cmd/jitctl ./services/requester/cmd/requester ./services/policy/cmd/policy \
             ./services/approval/cmd/approval ./services/revoker/cmd/revoker ./services/auditor/cmd/auditor \
             ./cmd/jit-mcp ./examples/agent-price-optimizer ./examples/guardrail-prices ./examples/resource-server
TEST_TIMEOUT ?= 15m
# Test artifacts (the console test's screenshots) are kept here.
TEST_OUTPUT ?= $(CURDIR)/test-output

.PHONY: all build run test bench bench-go chaos chaos-cluster demo vet fmt clean

all: build

## build: jitd, jitctl and the five service binaries into ./bin
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(BINARIES)

## run: the whole system in one process on an embedded NATS (Ctrl-C stops it)
run: build
	@echo "credentials: one per principal in $(DATA_DIR)/creds (made on first start)"
	@echo "in another terminal: export PATH=$(BIN):\$$PATH JIT_CREDS_DIR=$(DATA_DIR)/creds"
	$(BIN)/jitd --config $(CONFIG) --data-dir $(DATA_DIR) --nats-listen $(NATS_LISTEN) --http-listen $(HTTP_LISTEN)

## test: every test, with the race detector, against real (embedded) NATS
test:
	$(GO) vet $(PKGS)
	@mkdir -p $(TEST_OUTPUT)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -artifacts -outputdir $(TEST_OUTPUT) $(PKGS)

# BENCH_FLAGS go to jitbench: e.g. BENCH_FLAGS=--quick for a run of seconds,
# BENCH_FLAGS="--profile bench/prof" to save jitd's CPU and heap profiles.
BENCH_FLAGS ?=

## bench: jitbench against a fresh jitd subprocess (table on stdout, figures
## in bench/results.json; see BENCH.md), then the Go micro-benchmarks
bench:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/jitd ./cmd/jitbench
	$(BIN)/jitbench --jitd $(BIN)/jitd --out bench/results.json $(BENCH_FLAGS)
	$(MAKE) bench-go

# CHAOS_FLAGS go to jitchaos: e.g. CHAOS_FLAGS=--quick for a round of
# seconds, CHAOS_FLAGS=--keep to keep jitd's log and store.
CHAOS_FLAGS ?=

## chaos: the crash-safety round of issue 15 against a fresh jitd subprocess
## (SIGKILL and restart, SIGSTOP, under load); table on stdout, counts under
## single_node in chaos/results.json (see chaos/README.md); fails unless
## every count is 0
chaos:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/jitd ./cmd/jitchaos
	$(BIN)/jitchaos --jitd $(BIN)/jitd --out chaos/results.json $(CHAOS_FLAGS)

## chaos-cluster: the same round against three jitd nodes at R3 (issue 11):
## SIGKILL the JetStream meta leader, SIGSTOP and SIGKILL the audit
## stream's leader, under load; counts under cluster in chaos/results.json
chaos-cluster:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/jitd ./cmd/jitchaos
	$(BIN)/jitchaos --jitd $(BIN)/jitd --cluster --out chaos/results.json $(CHAOS_FLAGS)

## bench-go: the Go micro-benchmarks of every module
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## demo: the README walkthrough, scripted, against a fresh jitd
demo: build
	./scripts/demo.sh

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) $(DATA_DIR)
