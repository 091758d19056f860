# qwen-appliance build, test and benchmark entry points.
SHELL := /bin/bash
GO ?= go
BIN := bin/qwen-appliance
export CGO_CFLAGS ?= -Wno-deprecated-declarations
FUZZTIME ?= 10s
PKGS := ./...

.PHONY: build test bench fuzz lint demo clean

build:
	$(GO) build -o $(BIN) ./cmd/qwen-appliance

# Privileged tests (network namespaces, loop-mounted filesystems) run when
# root and skip with a reason otherwise.
test:
	$(GO) test -count=1 -timeout 30m $(PKGS)

# Go benchmarks, then every comparison script under scripts/bench (each runs
# qwen-appliance and a reference tool in the same run and prints ratios).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x $(PKGS)
	@for s in scripts/bench/*.sh; do echo "== $$s"; bash "$$s" || exit 1; done

# A short, bounded run of every fuzz target in every package.
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

demo: build
	bash scripts/demo.sh

clean:
	rm -rf bin
