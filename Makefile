# qwen-appliance build, test and benchmark entry points.
SHELL := /bin/bash
GO ?= go
BIN := bin/qwen-appliance
export CGO_CFLAGS ?= -Wno-deprecated-declarations
FUZZTIME ?= 10s
PKGS := ./...

# --version reports these; a plain 'go build' falls back to the commit and
# time the go command records (vcs.revision, vcs.time).
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS = -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(BUILD_DATE)

.PHONY: build appliance device-gpu device-bench man test bench fuzz lint demo clean

# The full build, for the connected side (bundle create fetches through
# go-getter: s3::, gcs::, git::).
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/qwen-appliance
	@if $(GO) version -m $(BIN) | grep -q 'faultinject'; then echo "$(BIN) is built with faultinject"; exit 1; fi

# The appliance build, for the isolated host: the same commands without
# go-getter, so without the AWS, GCS, gRPC and OpenTelemetry modules it
# brings. It fails if any of them is linked in.
APPLIANCE_BIN := bin/appliance/qwen-appliance
appliance:
	$(GO) build -tags appliance -ldflags "$(LDFLAGS)" -o $(APPLIANCE_BIN) ./cmd/qwen-appliance
	@if $(GO) version -m $(APPLIANCE_BIN) | grep -q 'faultinject'; then echo "$(APPLIANCE_BIN) is built with faultinject"; exit 1; fi
	@if $(GO) version -m $(APPLIANCE_BIN) | grep -E 'hashicorp/go-getter|aws/aws-sdk|cloud.google.com|google.golang.org/grpc|opentelemetry|go-containerregistry|k8s.io/'; then \
	  echo "appliance build links connected-side modules (above)"; exit 1; fi
	@echo "$(APPLIANCE_BIN): $$(stat -c %s $(APPLIANCE_BIN)) bytes, $$($(GO) version -m $(APPLIANCE_BIN) | grep -c '^\s*dep') modules"

# What scripts/device/real-gpu.sh runs on a GPU host that has no Go: the
# appliance binary and the gpu package's tests, which hold the real NVML
# against nvidia-smi.
device-gpu:
	$(GO) build -tags appliance -ldflags "-s -w $(LDFLAGS)" -o bin/device/qwen-appliance ./cmd/qwen-appliance
	$(GO) test -c -o bin/device/gpu.test ./provision/preflight/gpu

# What scripts/device/backup-bench.sh runs on a host without Go: the backup
# benchmarks, with Debian's age (the reference) beside them.
device-bench:
	$(GO) test -c -o bin/device-bench/backup.test ./backup
	cp "$$(command -v age)" bin/device-bench/age

# The qwen-appliance(1) manual page, generated from the commands' own
# definitions; install puts the same page in /usr/share/man/man1.
man: build
	$(BIN) man > bin/qwen-appliance.1

# Privileged tests (network namespaces, loop-mounted filesystems) run when
# root and skip with a reason otherwise.
# The suite runs with the faultinject tag, which lets the crash and cleanup
# scripts stop install at a step (QWA_FAULT_AFTER, QWA_FAIL_AFTER); the
# default build ignores both, as internal/fault's untagged test proves.
test:
	$(GO) test -count=1 -timeout 30m -tags faultinject $(PKGS)
	$(GO) test -count=1 ./internal/fault
	$(GO) test -count=1 -tags appliance ./bundles/fetch

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

# The darwin lines keep the module vetting on a laptop: Linux-only code
# (NVML, nftables, namespaces) sits behind build tags with stand-ins.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags faultinject ./internal/fault ./provision ./backup
	$(GO) vet -tags appliance ./bundles/... ./cmd/...
	GOOS=darwin $(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet -tags faultinject ./internal/fault ./provision ./backup
	GOOS=darwin $(GO) vet -tags appliance ./bundles/... ./cmd/...

demo: build
	bash scripts/demo.sh

clean:
	rm -rf bin
