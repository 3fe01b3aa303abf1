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

# The crash-cut suites of resize, relink and commit of VHDX replay every cut
# of a single-threaded operation: they run in unit; under -race (about ten
# times slower) they would add most of an hour and test no concurrency.
race:
	$(GO) test -race -count=1 -timeout 20m -run 'Concurrent|Random|Crash' -skip 'TestCommitVHDXCrashCuts|TestResizeCrash|TestCrashRelink' ./format/...
	$(GO) test -race -count=1 -timeout 5m ./vhdfs/...

# A count, not a duration: go1.26's fuzz coordinator can fail a duration-bound
# run with a bare "context deadline exceeded" (golang/go#75804, fixed in 1.27).
fuzz:
	$(GO) test ./format -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime 300000x -timeout 5m
	$(GO) test ./internal/partition -run '^$$' -fuzz '^FuzzRead$$' -fuzztime 100000x -timeout 5m
	$(GO) test ./internal/partition -run '^$$' -fuzz '^FuzzGPT$$' -fuzztime 100000x -timeout 5m
	$(GO) test ./format -run '^$$' -fuzz '^FuzzWriteCrash$$' -fuzztime 1000x -fuzzminimizetime 10x -timeout 5m
	$(GO) test ./format -run '^$$' -fuzz '^FuzzCommitCrash$$' -fuzztime 100x -fuzzminimizetime 10x -timeout 5m
	$(GO) test ./format/vhdx -run '^$$' -fuzz '^FuzzOpenVHDX$$' -fuzztime 50000x -timeout 5m
	$(GO) test ./format/vhdx -run '^$$' -fuzz '^FuzzWriteVHDX$$' -fuzztime 500x -fuzzminimizetime 10x -timeout 5m

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@if grep -rn --include='*.go' -E '(^|[^.A-Za-z])panic\(' format vhdfs | grep -v '_test.go' | grep -v '"BUG:'; then \
		echo "bare panic( in format/ or vhdfs/: return an error instead"; exit 1; fi

# Integration tests run the built binaries against real mounts; -p 1 keeps
# output live and ordered. They run with TMPDIR set to a directory of their
# own, and check-mounts fails if anything of theirs is left there: a mount,
# a vhdmount server, a file. Mounts of anything else on the machine (another
# run, the user's own) do not count.
integration:
	$(GO) test -c -o $(BIN)/integration.test ./integration
	@tmp=$$(mktemp -d /tmp/vhdmount-integration.XXXXXX) && chmod 755 $$tmp && \
	TMPDIR=$$tmp ./$(BIN)/integration.test -test.v -test.count=1 -test.timeout 30m; rc=$$?; \
	$(MAKE) --no-print-directory check-mounts IT_TMPDIR=$$tmp || rc=1; \
	rmdir $$tmp 2>/dev/null || { echo "the integration tests left files in $$tmp:"; ls -A $$tmp; rc=1; }; \
	exit $$rc

# check-mounts IT_TMPDIR=DIR: nothing is mounted under DIR and no vhdmount
# server names it (/proc/*/cmdline). DIR must be given: it is the run's.
check-mounts:
	@test -n "$(IT_TMPDIR)" || { echo "check-mounts: give the run's directory: make check-mounts IT_TMPDIR=DIR"; exit 2; }
	@left=$$(awk -v d="$(IT_TMPDIR)/" 'index($$2, d) == 1 {print $$2}' /proc/self/mounts); \
	if [ -n "$$left" ]; then echo "mounts left behind: $$left"; exit 1; fi
	@for c in /proc/[0-9]*/cmdline; do \
		argv0=$$(head -z -n1 $$c 2>/dev/null | tr -d '\0'); \
		case "$$argv0" in vhdmount|*/vhdmount) ;; *) continue;; esac; \
		args=$$(tr '\0' ' ' < $$c 2>/dev/null); \
		case "$$args" in *" $(IT_TMPDIR)/"*) echo "server left running: $${c%/cmdline}: $$args"; exit 1;; esac; \
	done

demo: build
	./scripts/demo.sh

bench: build
	$(GO) run ./bench

bench-quick: build
	$(GO) run ./bench -quick

clean:
	rm -rf $(BIN) bench.json

# Install like a packaged tool: static binaries (no cgo, so they run on any
# Linux and in a scratch container), man pages and bash/zsh completions.
# `make install PREFIX=/usr DESTDIR=/tmp/stage` stages a package tree.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions

.PHONY: install uninstall

install:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/static/vhd ./cmd/vhd
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/static/vhdmount ./cmd/vhdmount
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 $(BIN)/static/vhd $(BIN)/static/vhdmount $(DESTDIR)$(BINDIR)/
	install -m 0644 docs/man/vhd.1 $(DESTDIR)$(MANDIR)/man1/vhd.1
	install -m 0644 docs/man/vhdmount.8 $(DESTDIR)$(MANDIR)/man8/vhdmount.8
	install -m 0644 contrib/completion/vhd.bash $(DESTDIR)$(BASHCOMPDIR)/vhd
	install -m 0644 contrib/completion/vhdmount.bash $(DESTDIR)$(BASHCOMPDIR)/vhdmount
	install -m 0644 contrib/completion/_vhd contrib/completion/_vhdmount $(DESTDIR)$(ZSHCOMPDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vhd $(DESTDIR)$(BINDIR)/vhdmount \
		$(DESTDIR)$(MANDIR)/man1/vhd.1 $(DESTDIR)$(MANDIR)/man8/vhdmount.8 \
		$(DESTDIR)$(BASHCOMPDIR)/vhd $(DESTDIR)$(BASHCOMPDIR)/vhdmount \
		$(DESTDIR)$(ZSHCOMPDIR)/_vhd $(DESTDIR)$(ZSHCOMPDIR)/_vhdmount
