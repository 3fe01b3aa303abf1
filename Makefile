# vhdmount: see README.md. `make test` is what CI runs (as root, via .ci/run).
GO       ?= go
BIN      := bin
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
PKGS     := ./format/... ./vhdfs/... ./cmd/... ./internal/...

.PHONY: all build test unit race fuzz lint integration check-mounts demo bench bench-quick clean

all: build

build:
	$(GO) build -o $(BIN)/vhd ./cmd/vhd
	$(GO) build -o $(BIN)/vhdmount ./cmd/vhdmount

# Everything: lint, unit tests (corpus conformance included), race, a short
# fuzz run, and the integration tests that mount for real (root and /dev/fuse;
# outside CI they skip with a reason, in CI they must run).
test: lint unit race fuzz integration

unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

race:
	$(GO) test -race -count=1 -timeout 20m -run 'Concurrent|Random|Crash' ./format/...
	$(GO) test -race -count=1 -timeout 5m ./vhdfs/...

# A count, not a duration: go1.26's fuzz coordinator can fail a duration-bound
# run with a bare "context deadline exceeded" (golang/go#75804, fixed in 1.27).
fuzz:
	$(GO) test ./format -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime 300000x -timeout 5m
	$(GO) test ./format -run '^$$' -fuzz '^FuzzWriteCrash$$' -fuzztime 1000x -fuzzminimizetime 10x -timeout 5m

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@if grep -rn --include='*.go' -E '(^|[^.A-Za-z])panic\(' format vhdfs | grep -v '_test.go' | grep -v '"BUG:'; then \
		echo "bare panic( in format/ or vhdfs/: return an error instead"; exit 1; fi

# Integration tests run the built binaries against real mounts; -p 1 keeps
# output live and ordered. check-mounts fails if any mount was left behind.
integration:
	$(GO) test -c -o $(BIN)/integration.test ./integration
	./$(BIN)/integration.test -test.v -test.count=1 -test.timeout 30m
	@$(MAKE) --no-print-directory check-mounts

check-mounts:
	@left=$$(awk '$$3 ~ /^fuse/ && $$1 ~ /vhd/ {print $$2}' /proc/mounts); \
	if [ -n "$$left" ]; then echo "mounts left behind: $$left"; exit 1; fi

demo: build
	./scripts/demo.sh

bench: build
	$(GO) run ./bench

bench-quick: build
	$(GO) run ./bench -quick

clean:
	rm -rf $(BIN) bench.json
