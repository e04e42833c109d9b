# All set-up happens here: `make demo` runs the main job, `make test` runs
# every test. Both work on a fresh Debian 12 machine as root.

GO       ?= go
BIN      := bin
PROTO    := shared/executorpb/executor.proto
export CGO_ENABLED ?= 0

.PHONY: all build deps test unit lint proto proto-check python-proto python-proto-check conformance-python fuzz bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./host/cmd/... ./plugin/cmd/... ./testharness/cmd/...

# Packages the integration tests need (openssh-server, lxd, protoc, ...).
deps:
	./scripts/install-test-deps

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Every test: unit, integration (real sshd, real LXD), conformance. Under
# CI=true no integration test may skip.
test: deps build lint proto-check python-proto-check conformance-python
	$(GO) test -count=1 -timeout 30m ./...

# Unit tests only (no root, no daemons needed; integration tests skip).
unit:
	$(GO) test -count=1 -short ./...

# Regenerates the protobuf code with the generator versions pinned in go.mod.
proto:
	protoc --proto_path=shared/executorpb \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=shared/executorpb --go_opt=paths=source_relative \
		--go-grpc_out=shared/executorpb --go-grpc_opt=paths=source_relative \
		$(PROTO)

# Regenerates the protobuf code into a temporary folder and fails unless it
# is byte-identical to what is committed.
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
conformance-python: build
	@out=$$(mktemp) && trap 'rm -f "$$out"' EXIT && \
	$(BIN)/conformance --plugin $(PYPLUGIN) | tee "$$out" && \
	tail -n 1 "$$out" | grep -Eq '^[0-9]+ passed, 0 failed, 0 skipped$$' || \
	{ echo "conformance-python: every case must pass against $(PYPLUGIN), none skipped"; exit 1; }

# The Python stubs, from the same .proto files (proto/README.md), with
# Debian 12's protoc and grpc_python_plugin.
PYGEN_PROTOS := --proto_path=shared/executorpb --proto_path=proto/go-plugin --proto_path=proto \
	executor.proto grpc_controller.proto grpc_stdio.proto google/rpc/status.proto
python-proto:
	protoc --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
		--python_out=examples/python-plugin/gen --grpc_out=examples/python-plugin/gen $(PYGEN_PROTOS)

python-proto-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	protoc --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
		--python_out="$$tmp" --grpc_out="$$tmp" $(PYGEN_PROTOS) && \
	diff -r "$$tmp" examples/python-plugin/gen >/dev/null || \
	{ echo "examples/python-plugin/gen differs from what make python-proto generates"; exit 1; }; \
	echo "python stubs are up to date"

FUZZTIME ?= 60s
fuzz:
	$(GO) test ./shared/layout -run '^$$' -fuzz '^FuzzQuote$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/layout -run '^$$' -fuzz '^FuzzContainment$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzPlan$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzPlanContainment$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/devices -run '^$$' -fuzz '^FuzzManifest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shared/strictjson -run '^$$' -fuzz '^FuzzStrictJSON$$' -fuzztime $(FUZZTIME)
	$(GO) test ./testharness/remotefs -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME)

bench: deps build
	./scripts/bench

# The seed's job run whole on the embedded virtual remote (the runner
# binary does not link the harness; the demo binary does).
demo: build
	$(BIN)/demo

clean:
	rm -rf $(BIN)
