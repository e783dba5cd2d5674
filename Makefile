# projectord — build, test, benchmark.
#
#   make test    vet, gofmt check and the whole test suite under -race against
#                an ephemeral PostgreSQL the tests start themselves
#   make bench   benchmarks, each against a baseline in the same run (plain
#                pgx, or the event stores' own readers)
#   make demo    see projectord work: throw-away PostgreSQL, a live event
#                stream and three projectors (projectord dev); Ctrl-C stops it

GO       ?= go
BIN      ?= bin/projectord
PKG      := github.com/projectord/projectord
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE     ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
IMAGE    ?= projectord:$(VERSION)
TEST_TIMEOUT ?= 14m
FUZZTIME ?= 30s

.PHONY: all build test vet fmt-check lint fuzz bench chaos demo docker clean node-deps

# The event stores' own npm packages (Emmett, Message DB), which the store
# tests and benchmarks write and consume through, installed from the
# committed lock file.
NODE_DIR := internal/stores/node
node-deps: $(NODE_DIR)/node_modules/.package-lock.json
$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	@touch $@

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/projectord

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

test: vet fmt-check node-deps
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

lint: vet fmt-check
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@latest); ran vet and gofmt only"; fi

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzLoadBytes -fuzztime $(FUZZTIME) ./internal/config/

# One package at a time (-p 1): the benchmarks of one package would
# otherwise run beside the other's and measure each other's load.
bench: node-deps
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 90m ./internal/bench/ ./internal/chaos/

chaos:
	$(GO) test -race -run 'Chaos' -timeout 60m ./internal/chaos/ -chaos.full

# DEMO_FLAGS are passed to `projectord dev`, e.g. DEMO_FLAGS='--rate 2000 --notify'.
demo: build
	$(BIN) dev $(DEMO_FLAGS)

docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) -t $(IMAGE) .

clean:
	rm -rf bin
