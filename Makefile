# All set-up happens here: `make demo` runs the main job, `make test` runs
# every test. Both work on a fresh Debian 12 machine as root.

GO       ?= go
BIN      := bin
PROTO    := shared/executorpb/executor.proto
export CGO_ENABLED ?= 0
# The packages under host/testdata (plugins the host's tests build), which
# ./... leaves out: lint checks them too.
TESTDATA_PKGS := $(patsubst %/,./%,$(sort $(dir $(wildcard host/testdata/*/*.go))))

.PHONY: all help build deps test unit lint proto proto-check python-proto python-proto-check conformance-python fuzz bench demo clean

all: build

## help: list the targets
help:
	@echo "targets:"
	@sed -n 's/^## \([a-z-]*\): /  \1\t/p' $(MAKEFILE_LIST) | expand -t 16

## build: the binaries in bin/ (runner-host, executor-remote-linux-vm, conformance, demo)
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./host/cmd/... ./plugin/cmd/... ./testharness/cmd/...

## deps: install what the integration tests need (openssh-server, lxd, protoc, ...)
deps:
	./scripts/install-test-deps

## lint: gofmt, goimports, vet and staticcheck, host/testdata included
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@out=$$($(GO) tool goimports -l $$(git ls-files '*.go' | xargs grep -L '^// Code generated .* DO NOT EDIT\.$$')); \
		if [ -n "$$out" ]; then echo "goimports would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./... $(TESTDATA_PKGS)
	$(GO) tool staticcheck ./... $(TESTDATA_PKGS)

## test: every test (unit, fuzz seeds, real sshd, real LXD, conformance, the Python example), with lint beside it
# Under CI=true no integration test may skip. Lint runs beside the tests,
# not before them, so the slow part starts at once; its output comes after
# the tests', and the target fails when either fails.
test: deps
	@echo "==> make test [1/5]: build"
	@$(MAKE) --no-print-directory build
	@echo "==> make test [2/5]: proto-check, python-proto-check"
	@$(MAKE) --no-print-directory proto-check python-proto-check
	@echo "==> make test [3/5]: conformance-python (bin/conformance against examples/python-plugin)"
	@$(MAKE) --no-print-directory conformance-python
	@echo "==> make test [4/5]: go test ./... (lint runs beside it)"
	@lintlog=$$(mktemp) && trap 'kill $$lintpid 2>/dev/null; rm -f "$$lintlog"' EXIT && \
	{ $(MAKE) --no-print-directory lint >"$$lintlog" 2>&1 & lintpid=$$!; } && \
	$(GO) test -count=1 -timeout 30m ./...; testrc=$$?; \
	wait $$lintpid; lintrc=$$?; \
	echo "==> make test [5/5]: lint"; cat "$$lintlog"; \
	if [ $$lintrc -ne 0 ]; then echo "==> make test: lint failed"; fi; \
	if [ $$testrc -ne 0 ]; then echo "==> make test: tests failed"; fi; \
	[ $$testrc -eq 0 ] && [ $$lintrc -eq 0 ] && echo "==> make test: all passed"

## unit: the unit tests only (go test -short: no root, no daemons; integration tests skip)
unit:
	$(GO) test -count=1 -short ./...

## proto: regenerate the protobuf code with the generators pinned in go.mod
proto:
	protoc --proto_path=shared/executorpb \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=shared/executorpb --go_opt=paths=source_relative \
		--go-grpc_out=shared/executorpb --go-grpc_opt=paths=source_relative \
		$(PROTO)

## proto-check: fail unless the committed protobuf code is what make proto generates
proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	protoc --proto_path=shared/executorpb \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out="$$tmp" --go_opt=paths=source_relative \
		--go-grpc_out="$$tmp" --go-grpc_opt=paths=source_relative \
		$(PROTO) && \
	for f in executor.pb.go executor_grpc.pb.go; do \
		cmp "$$tmp/$$f" shared/executorpb/$$f || { echo "shared/executorpb/$$f differs from what make proto generates"; exit 1; }; \
	done && echo "protobuf code is up to date"

# The Python example plugin (examples/python-plugin): nothing to build; its
# stubs are committed. Every case must pass, none may be skipped.
PYPLUGIN := examples/python-plugin/executor-python-example
## conformance-python: bin/conformance against the Python example plugin; every case must pass
conformance-python: build
	@out=$$(mktemp) && trap 'rm -f "$$out"' EXIT && \
	$(BIN)/conformance --plugin $(PYPLUGIN) | tee "$$out" && \
	tail -n 1 "$$out" | grep -Eq '^[0-9]+ passed, 0 failed, 0 skipped$$' || \
	{ echo "conformance-python: every case must pass against $(PYPLUGIN), none skipped"; exit 1; }

# The Python stubs, from the same .proto files (proto/README.md), with
# Debian 12's protoc and grpc_python_plugin.
PYGEN_PROTOS := --proto_path=shared/executorpb --proto_path=proto/go-plugin --proto_path=proto \
	executor.proto grpc_controller.proto grpc_stdio.proto google/rpc/status.proto
## python-proto: regenerate the Python example's stubs (examples/python-plugin/gen)
python-proto:
	protoc --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
		--python_out=examples/python-plugin/gen --grpc_out=examples/python-plugin/gen $(PYGEN_PROTOS)

## python-proto-check: fail unless make python-proto reproduces the committed Python stubs
python-proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	protoc --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
		--python_out="$$tmp" --grpc_out="$$tmp" $(PYGEN_PROTOS) && \
	diff -r "$$tmp" examples/python-plugin/gen >/dev/null || \
	{ echo "examples/python-plugin/gen differs from what make python-proto generates"; exit 1; }; \
	echo "python stubs are up to date"

FUZZTIME ?= 60s
## fuzz: each fuzz target for FUZZTIME (default 60s)
fuzz:
	$(GO) test ./shared/layout -run '^$$' -fuzz '^FuzzQuote$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/layout -run '^$$' -fuzz '^FuzzContainment$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzPlan$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzPlanContainment$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzManifest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/strictjson -run '^$$' -fuzz '^FuzzStrictJSON$$' -fuzztime $(FUZZTIME)
	$(GO) test ./testharness/remotefs -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME)

## bench: our speed next to the seed's way, as ratios
bench: deps build
	./scripts/bench

## demo: the seed's job run whole on the embedded virtual remote (bin/demo)
# The runner binary does not link the harness; the demo binary does.
demo: build
	$(BIN)/demo

## clean: remove bin/
clean:
	rm -rf $(BIN)
