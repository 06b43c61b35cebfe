# witnz — build, check, test and run everything from the repository root.
# `make help` lists the targets. Every Go module is listed in go.work; the
# targets loop over them (the root is not a module, so no `./...` here).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Modules in go.work order (its `use` lines), and the services among them.
MODULES  := $(shell sed -n -E 's|^[[:space:]]*(use[[:space:]]+)?\./([^[:space:]]+).*|\2|p' go.work)
SERVICES := $(patsubst services/%,%,$(filter services/%,$(MODULES)))

GEN_STALE := generated code is stale: run make generate and commit

.PHONY: help deps tools generate generate-check build gomod-check fmt-check deploy-check test up down clean-stack clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

deps: ## install PostgreSQL server and redis-server if missing
	bash scripts/deps.sh

# Code generators, pinned by `tool` directives in tools/codegen and tools/buf
# (both outside go.work on purpose, so their dependencies stay their own).
tools: bin/protoc-gen-go bin/protoc-gen-connect-go bin/buf ## build buf and the protoc plugins into bin/

bin/protoc-gen-go bin/protoc-gen-connect-go: tools/codegen/go.mod tools/codegen/go.sum
	mkdir -p bin
	GOWORK=off go build -C tools/codegen -o ../../bin/ google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go

bin/buf: tools/buf/go.mod tools/buf/go.sum
	mkdir -p bin
	GOWORK=off go build -C tools/buf -o ../../bin/buf github.com/bufbuild/buf/cmd/buf

generate: tools ## regenerate libs/gen from proto/ (buf lint, buf generate)
	rm -rf libs/gen/witnz
	bin/buf lint
	bin/buf generate

generate-check: generate ## fail if libs/gen differs from what buf generates
	@git diff --exit-code --stat -- libs/gen || { echo "$(GEN_STALE)" >&2; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- libs/gen); \
	if [[ -n $$untracked ]]; then echo "$$untracked" >&2; echo "$(GEN_STALE)" >&2; exit 1; fi

build: ## build every service and the witnz CLI into bin/
	mkdir -p bin
	go build -o bin/ $(foreach s,$(SERVICES),./services/$(s)/cmd/$(s)) ./tools/witnz/cmd/witnz

gomod-check: ## every module builds and vets on its own (GOWORK=off)
	@failed=(); \
	for m in $(MODULES); do \
	  echo "== $$m"; \
	  (cd "$$m" && GOWORK=off go build ./... && GOWORK=off go vet ./...) || failed+=("$$m"); \
	done; \
	if (( $${#failed[@]} )); then echo "modules that do not build or vet with GOWORK=off: $${failed[*]}" >&2; exit 1; fi

fmt-check: ## gofmt -l is empty for all non-generated Go code
	@out=$$(find libs services tools -name '*.go' -not -path 'libs/gen/*' -print0 | xargs -0 -r gofmt -l); \
	if [[ -n $$out ]]; then echo "$$out" >&2; echo "not gofmt-clean: run gofmt -w on the files above" >&2; exit 1; fi

test: deps ## go test -race over every module, with a per-module summary
	@start=$$SECONDS; failed=(); summary=(); \
	for m in $(MODULES); do \
	  echo "== go test $$m"; t=$$SECONDS; \
	  if (cd "$$m" && go test -race -count=1 -timeout 15m ./...); then r=ok; else r=FAIL; failed+=("$$m"); fi; \
	  summary+=("$$(printf '%-4s  %-22s %5ss' "$$r" "$$m" "$$((SECONDS - t))")"); \
	done; \
	echo; echo "== test summary"; printf '%s\n' "$${summary[@]}"; \
	echo "total $$((SECONDS - start))s"; \
	if (( $${#failed[@]} )); then echo "failed: $${failed[*]}" >&2; exit 1; fi

deploy-check: ## deploy/ renders (kustomize), parses (compose, systemd, Tiltfile) and passes only flags the services accept
	cd deploy/check && GOWORK=off go test -count=1 ./...

up: deps build ## start the local stack in .witnz/ (foreground; Ctrl-C stops it)
	bin/witnz up

down: ## stop the local stack
	bin/witnz down

clean-stack: ## stop the local stack and delete .witnz/ (all its data)
	if [[ -x bin/witnz ]]; then bin/witnz down; fi
	rm -rf .witnz

clean: ## remove bin/
	rm -rf bin

.PHONY: bench
bench: deps build ## benchmarks with same-run baselines into bench/results/ (ROWS=B1,B4 a subset; QUICK=1 under 3 minutes)
	go build -o bin/bench ./tools/bench/cmd/bench
	bin/bench --bin bin --out bench/results $(if $(ROWS),--rows $(ROWS)) $(if $(filter-out 0 false no,$(QUICK)),--quick)

.PHONY: fuzz
fuzz: ## run every Fuzz target for FUZZTIME each (default 10s); make test runs only their seeds
	FUZZTIME=$(or $(FUZZTIME),10s) bash scripts/fuzz.sh
