# Aegis Gateway — build, test, fuzz, run and benchmark.
#
# `make help` lists the targets. CI runs `make test` (through .ci/run) on a
# fresh clone of a fresh machine, so every target that needs a system package
# depends on `deps`, which installs what is missing.

# bash for PIPESTATUS in the test target.
SHELL   := /bin/bash

SWIFT   ?= swift
# The Swift toolchain's clang: unlike Debian's gcc it has libFuzzer.
CLANG   ?= /opt/swift/usr/bin/clang
# The C unit tests use the system compiler, as a second compiler next to SwiftPM's clang.
CC      ?= cc
CFLAGS  ?= -std=gnu17 -g -O1 -Wall -Wextra -fno-omit-frame-pointer
# -fno-sanitize-recover: undefined behaviour fails the test instead of printing and going on.
SAN      = -fsanitize=address,undefined -fno-sanitize-recover=all
# Fuzz targets link libFuzzer's main; the core they link is only instrumented.
FUZZ_SAN      = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CORE_SAN = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
LIBS     = -lsodium -lssl -lcrypto -luring -lpthread

FUZZ_SECONDS ?= 60
FUZZ_MAX_LEN ?= 70000
ARGS         ?=
BENCH_ARGS   ?=
RATIO_ARGS   ?=

# A shell without a login profile may not have Swift on PATH; ours is in /opt/swift.
ifneq ($(wildcard /opt/swift/usr/bin/swift),)
ifeq ($(filter /opt/swift/usr/bin,$(subst :, ,$(PATH))),)
export PATH := $(PATH):/opt/swift/usr/bin
endif
endif

# Sanitizer reports with stacks; leaks fail the test too.
export ASAN_OPTIONS  ?= detect_leaks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

# --- Sources: $(wildcard) so new files are picked up without editing this ----
CORE_DIR  = CSources/AegisCore
IO_DIR    = CSources/AegisIO
# The C tests and fuzzers link the protocol core and the transport together.
CORE_SRCS = $(wildcard $(CORE_DIR)/src/*.c) $(wildcard $(IO_DIR)/src/*.c)
# Tests may include the core's private headers (src/) as well as the public one;
# _GNU_SOURCE as in the AegisCore target's cSettings in Package.swift.
CORE_INC  = -I$(CORE_DIR)/include -I$(CORE_DIR)/src -I$(IO_DIR)/include -I$(IO_DIR)/src -D_GNU_SOURCE

CTEST_SRCS  = $(wildcard Tests/CoreC/test_*.c)
CTEST_NAMES = $(patsubst Tests/CoreC/%.c,%,$(CTEST_SRCS))
FUZZ_SRCS   = $(wildcard Tests/Fuzz/fuzz_*.c)
FUZZ_NAMES  = $(patsubst Tests/Fuzz/fuzz_%.c,%,$(FUZZ_SRCS))

# Everything the C tests and fuzzers build goes here, apart from SwiftPM's .build/.
CBUILD = .build-c

# --- deps: run the install script once per version of it ----------------------
# The stamp's name carries a hash of the script and the Python requirements,
# so editing either reruns it; a fresh clone has no stamp and runs it once.
STAMPS     = .build-stamps
DEPS_HASH := $(shell cat scripts/install-deps.sh Tests/requirements.txt 2>/dev/null | sha256sum | cut -c1-16)
DEPS_STAMP = $(STAMPS)/deps-$(DEPS_HASH)

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.PHONY: help deps build test ctest e2e fuzz fuzz-ci run bench bench-gateway bench-report clean distclean

help:
	@echo "Targets:"
	@echo "  deps      install missing system and Python packages (scripts/install-deps.sh, once per version)"
	@echo "  build     swift build (debug)"
	@echo "  test      deps, C unit tests, swift build --build-tests + swift test, then fuzz-ci  (what CI runs)"
	@echo "  ctest     C unit tests only: Tests/CoreC/test_*.c with ASan+UBSan, one summed 'N passed, N failed'"
	@echo "  e2e       end-to-end tests (pytest, Tests/e2e) against .build/debug/aegisd"
	@echo "  fuzz      each Tests/Fuzz/fuzz_*.c for FUZZ_SECONDS (default $(FUZZ_SECONDS)) on a copy of its corpus"
	@echo "  fuzz-ci   fuzz with FUZZ_SECONDS=60"
	@echo "  run       release build of aegisd, then .build/release/aegisd \$$ARGS"
	@echo "  bench     swift package --package-path Benchmarks benchmark \$$BENCH_ARGS, then the"
	@echo "            core-ratios table (ours / bare libsodium) with \$$RATIO_ARGS (e.g. --rounds 21),"
	@echo "            the transport bench, then bench-gateway"
	@echo "  bench-gateway  aegis-bench against a fresh aegisd: headline CPU ratios (\$$GATEWAY_BENCH_ARGS)"
	@echo "  bench-report   PNG chart of the last bench-gateway CSV ($(CBUILD)/bench.png)"
	@echo "  clean     remove build outputs (keeps SwiftPM's fetched dependencies)"
	@echo "  distclean clean, and remove .build/ and Benchmarks/.build/ entirely"
	@echo "Variables: SWIFT=$(SWIFT) CC=$(CC) CLANG=$(CLANG) FUZZ_SECONDS FUZZ_MAX_LEN ARGS BENCH_ARGS RATIO_ARGS"

deps: $(DEPS_STAMP)
	@:

$(DEPS_STAMP):
	@bash scripts/install-deps.sh
	@rm -rf $(STAMPS) && mkdir -p $(STAMPS) && touch $@

# --- Swift ---------------------------------------------------------------------
build: deps
	$(SWIFT) build

# Tests are built once, then run without a second build. The last line sums
# the C programs' checks and the Swift tests (XCTest's own line counts only
# XCTest cases; ours are Swift Testing's), as "total: N passed, N failed".
test: deps
	@mkdir -p $(CBUILD)
	@$(MAKE) --no-print-directory ctest 2>&1 | tee $(CBUILD)/ctest.out; test $${PIPESTATUS[0]} -eq 0
	$(SWIFT) build --build-tests
	$(SWIFT) build --product aegisd
	$(SWIFT) build --product aegisctl
	$(SWIFT) build --product aegis-agent
	@$(SWIFT) test --skip-build 2>&1 | tee $(CBUILD)/swift-test.out; test $${PIPESTATUS[0]} -eq 0
	@$(MAKE) --no-print-directory e2e 2>&1 | tee $(CBUILD)/e2e.out; test $${PIPESTATUS[0]} -eq 0
	@$(MAKE) --no-print-directory fuzz-ci
	@c=$$(grep -E '^[0-9]+ passed, [0-9]+ failed$$' $(CBUILD)/ctest.out | tail -n 1 | cut -d' ' -f1); \
	s=$$(sed -nE 's/.*Test run with ([0-9]+) tests? .*passed.*/\1/p' $(CBUILD)/swift-test.out | tail -n 1); \
	p=$$(sed -nE 's/^(.* )?([0-9]+) passed.*/\2/p' $(CBUILD)/e2e.out | tail -n 1); \
	echo "C checks: $${c:-0}, Swift tests: $${s:-0}, end-to-end tests: $${p:-0}, fuzz targets: $(words $(FUZZ_NAMES))"; \
	echo "total: $$(( $${c:-0} + $${s:-0} + $${p:-0} + $(words $(FUZZ_NAMES)) )) passed, 0 failed"

# End-to-end tests: real aegisd processes (.build/debug) on both I/O
# backends, driven by independent Python clients (Tests/e2e).
e2e: deps
	cd Tests/e2e && python3 -m pytest -q -p no:cacheprovider

# `make run` trusts agents on first use (PROTOCOL.md's open enrollment), as
# a development default; production chooses token or manual.
RUN_ARGS ?= --enrollment open
run: deps
	$(SWIFT) build -c release --product aegisd
	.build/release/aegisd $(RUN_ARGS) $(ARGS)

# Two reports: package-benchmark's suite (distributions of each case), then
# core-ratios (ours ÷ bare libsodium, interleaved; always exits 0).
bench: deps
	@test -f Benchmarks/Package.swift || { echo "bench: Benchmarks/Package.swift does not exist yet"; exit 1; }
	$(SWIFT) package --package-path Benchmarks benchmark $(BENCH_ARGS)
	$(SWIFT) run -c release --package-path Benchmarks core-ratios $(RATIO_ARGS)
	bash Benchmarks/transport-bench.sh
	@$(MAKE) --no-print-directory bench-gateway

# The gateway under load (aegis-bench, docs/benchmarks.md): its CPU per up
# message, down message and handshake against the bare crypto, measured in
# the same run; the headline lines come first in its summary.
GATEWAY_BENCH_ARGS ?= --agents 1000 --duration 10
bench-gateway: deps
	$(SWIFT) build -c release --product aegisd --product aegis-bench
	@mkdir -p $(CBUILD)
	.build/release/aegis-bench $(GATEWAY_BENCH_ARGS) --json $(CBUILD)/bench.json --csv $(CBUILD)/bench.csv

# A PNG chart of the last aegis-bench run's CSV (matplotlib, installed on demand).
bench-report:
	@test -f $(CBUILD)/bench.csv || { echo "bench-report: run make bench-gateway first"; exit 1; }
	@python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib
	python3 Benchmarks/plot_bench.py $(CBUILD)/bench.csv $(CBUILD)/bench.png
	@echo "chart: $(CBUILD)/bench.png"

# --- C unit tests --------------------------------------------------------------
# The core is compiled once into a sanitized archive; each test program links
# its own file against it. -MMD keeps header dependencies (check.h, json.h …).
CTEST_CORE_OBJS = $(patsubst $(CORE_DIR)/src/%.c,$(CBUILD)/core/%.o,$(wildcard $(CORE_DIR)/src/*.c)) \
                  $(patsubst $(IO_DIR)/src/%.c,$(CBUILD)/io/%.o,$(wildcard $(IO_DIR)/src/*.c))
CTEST_CORE_LIB  = $(CBUILD)/libaegiscore-san.a

$(CBUILD)/core/%.o: $(CORE_DIR)/src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(CORE_INC) -MMD -MP -c $< -o $@

$(CBUILD)/io/%.o: $(IO_DIR)/src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(CORE_INC) -MMD -MP -c $< -o $@

$(CTEST_CORE_LIB): $(CTEST_CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(CBUILD)/test_%: Tests/CoreC/test_%.c $(CTEST_CORE_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(CORE_INC) -ITests/CoreC -MMD -MP $< $(CTEST_CORE_LIB) $(LIBS) -o $@

# Every test is built and run even when an earlier one fails (to build or to
# pass); their "N passed, N failed" lines are summed into the last line. A
# test that crashes, exits non-zero with no failure counted, prints no summary
# or does not build counts as one failure.
ctest: deps
	@$(MAKE) --no-print-directory -s $(CTEST_CORE_LIB) || { echo "ctest: the core does not build with $(CC) and sanitizers"; exit 1; }
	@passed=0; failed=0; \
	for t in $(CTEST_NAMES); do \
	    echo "== $$t"; \
	    if ! $(MAKE) --no-print-directory -s $(CBUILD)/$$t; then \
	        echo "$$t: DID NOT BUILD"; failed=$$((failed + 1)); continue; \
	    fi; \
	    $(CBUILD)/$$t > $(CBUILD)/$$t.log 2>&1; rc=$$?; \
	    cat $(CBUILD)/$$t.log; \
	    line=$$(grep -E '^[0-9]+ passed, [0-9]+ failed$$' $(CBUILD)/$$t.log | tail -n 1); \
	    p=$$(echo "$$line" | sed -nE 's/^([0-9]+) passed.*/\1/p'); \
	    f=$$(echo "$$line" | sed -nE 's/.* ([0-9]+) failed$$/\1/p'); \
	    passed=$$((passed + $${p:-0})); failed=$$((failed + $${f:-0})); \
	    if [ -z "$$line" ]; then \
	        echo "$$t: no 'N passed, N failed' line (exit status $$rc)"; failed=$$((failed + 1)); \
	    elif [ $$rc -ne 0 ] && [ $${f:-0} -eq 0 ]; then \
	        echo "$$t: exit status $$rc"; failed=$$((failed + 1)); \
	    fi; \
	done; \
	echo "== C unit tests ($(words $(CTEST_NAMES)) programs)"; \
	echo "$$passed passed, $$failed failed"; \
	[ $$failed -eq 0 ]

# --- Fuzzing -------------------------------------------------------------------
# Same scheme with clang: the core is instrumented for coverage
# (fuzzer-no-link) in its own archive, and each target links libFuzzer's main.
FUZZ_CFLAGS     = -g -O1 -fno-omit-frame-pointer
# The toolchain's own lld: the default gold prints hundreds of warnings on ASan's symbols.
FUZZ_LDFLAGS    = -fuse-ld=lld
FUZZ_CORE_OBJS  = $(patsubst $(CORE_DIR)/src/%.c,$(CBUILD)/fuzz-core/%.o,$(wildcard $(CORE_DIR)/src/*.c)) \
                  $(patsubst $(IO_DIR)/src/%.c,$(CBUILD)/fuzz-io/%.o,$(wildcard $(IO_DIR)/src/*.c))
FUZZ_CORE_LIB   = $(CBUILD)/libaegiscore-fuzz.a

$(CBUILD)/fuzz-core/%.o: $(CORE_DIR)/src/%.c
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_CORE_SAN) $(CORE_INC) -MMD -MP -c $< -o $@

$(CBUILD)/fuzz-io/%.o: $(IO_DIR)/src/%.c
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_CORE_SAN) $(CORE_INC) -MMD -MP -c $< -o $@

$(FUZZ_CORE_LIB): $(FUZZ_CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(CBUILD)/fuzz/fuzz_%: Tests/Fuzz/fuzz_%.c $(FUZZ_CORE_LIB)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $(FUZZ_SAN) $(FUZZ_LDFLAGS) $(CORE_INC) -MMD -MP $< $(FUZZ_CORE_LIB) $(LIBS) -o $@

# Each target runs on a temporary copy of its committed corpus, so new inputs
# never dirty the repo. A crashing input is kept in .build-c/fuzz/artifacts/
# (libFuzzer also prints it in base64); the full log is .build-c/fuzz/NAME.log.
fuzz: deps
	@if [ -z "$(FUZZ_NAMES)" ]; then echo "fuzz: no targets in Tests/Fuzz"; exit 0; fi; \
	$(MAKE) --no-print-directory -s $(FUZZ_CORE_LIB) || exit 1; \
	ok=0; bad=0; mkdir -p $(CBUILD)/fuzz/artifacts; \
	for n in $(FUZZ_NAMES); do \
	    echo "== fuzz $$n: $(FUZZ_SECONDS) s, max_len $(FUZZ_MAX_LEN)"; \
	    if ! $(MAKE) --no-print-directory -s $(CBUILD)/fuzz/fuzz_$$n; then \
	        echo "fuzz $$n: DID NOT BUILD"; bad=$$((bad + 1)); continue; \
	    fi; \
	    work=$$(mktemp -d); \
	    if [ -d Tests/Fuzz/corpus/$$n ]; then cp -R Tests/Fuzz/corpus/$$n/. $$work/; \
	    else echo "fuzz $$n: warning: no seed corpus in Tests/Fuzz/corpus/$$n"; fi; \
	    if $(CBUILD)/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
	          -timeout=25 -print_final_stats=1 -artifact_prefix=$(CBUILD)/fuzz/artifacts/$$n- \
	          $$work > $(CBUILD)/fuzz/$$n.log 2>&1; then \
	        grep -E '^(Done|stat::number_of_executed_units)' $(CBUILD)/fuzz/$$n.log; \
	        echo "fuzz $$n: ok, corpus $$(ls $$work | wc -l) inputs"; ok=$$((ok + 1)); \
	    else \
	        tail -n 80 $(CBUILD)/fuzz/$$n.log; echo "fuzz $$n: FAILED (log: $(CBUILD)/fuzz/$$n.log)"; bad=$$((bad + 1)); \
	    fi; \
	    rm -rf $$work; \
	done; \
	if [ $$bad -eq 0 ]; then echo "fuzz: all $$ok targets ran $(FUZZ_SECONDS) s without a finding"; \
	else echo "fuzz: $$bad of $$((ok + bad)) targets FAILED"; exit 1; fi

fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=60

# --- Cleaning ------------------------------------------------------------------
clean:
	rm -rf $(CBUILD) $(STAMPS)
	-$(SWIFT) package clean
	-[ ! -f Benchmarks/Package.swift ] || $(SWIFT) package --package-path Benchmarks clean

distclean: clean
	rm -rf .build Benchmarks/.build

-include $(wildcard $(CBUILD)/core/*.d $(CBUILD)/io/*.d $(CBUILD)/fuzz-core/*.d $(CBUILD)/fuzz-io/*.d $(CBUILD)/*.d $(CBUILD)/fuzz/*.d)
