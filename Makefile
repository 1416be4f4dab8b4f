# hv — build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GUEST := build/guest
DEMO_ROOT ?= /tmp/hv-demo

.PHONY: help deps build guest test unit e2e fuzz bench demo demo-stop lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

deps: ## install the Debian packages and Go modules hv needs
	scripts/install-deps.sh

build: ## build bin/hv and bin/hvd
	$(GO) build -o bin/hv ./cmd/hv
	$(GO) build -o bin/hvd ./cmd/hvd

guest: ## build the tiny test guest into build/guest (cached)
	internal/testguest/build.sh $(GUEST)

unit: ## unit tests (with the race detector)
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /e2e)

e2e: build guest ## end-to-end tests: real VMs on QEMU
	$(GO) test -count=1 -timeout 25m ./e2e/ -v -args -guest $(CURDIR)/$(GUEST) -bin $(CURDIR)/bin

test: deps lint unit e2e ## everything CI runs: install, vet, unit and e2e tests

lint: ## gofmt and go vet
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...

fuzz: ## run each fuzz target for a while (FUZZTIME=30s)
	scripts/fuzz.sh $${FUZZTIME:-30s}

bench: build guest ## side-by-side benchmarks; writes bench/RESULTS.md
	scripts/install-deps.sh bench
	$(GO) run ./bench -guest $(CURDIR)/$(GUEST) -bin $(CURDIR)/bin -out bench/RESULTS.md

demo: deps build guest ## install, build, start hvd and boot a VM from the tiny guest
	scripts/demo.sh $(DEMO_ROOT)

demo-stop: ## stop the demo's VM and hvd
	scripts/demo.sh --stop $(DEMO_ROOT)

clean: ## remove build outputs (not the cached guest: make clean-guest)
	rm -rf bin
