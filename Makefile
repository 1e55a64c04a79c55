# gocd - get-or-create daemon.  Plain make: all, check, demo, bench, install, clean.
#
# Sanitizer builds live in their own output directory:  make SAN=asan check
# (build-asan/); objects never mix between configurations.

VERSION  := 0.1.0
PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc

SAN ?=
ifeq ($(SAN),asan)
BUILD    ?= build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT      := -O1 -g
else
BUILD    ?= build
SANFLAGS :=
OPT      := -O2 -g
endif

PKGS     := libevent jansson libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifeq ($(PKG_LIBS),)
PKG_LIBS := -levent -ljansson -lpq
PKG_CFLAGS := -I/usr/include/postgresql
endif

WARN     := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
            -Wshadow -Wpointer-arith -Wno-unused-parameter
CFLAGS   ?= $(OPT)
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -DGOCD_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) \
              $(SANFLAGS) $(PKG_CFLAGS) -Iproto -MMD -MP
LDLIBS   := $(PKG_LIBS) -lm
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS)

PROTO_SRC  := $(wildcard proto/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLI_SRC    := client/goc.c
BENCH_SRC  := $(filter-out $(CLI_SRC),$(wildcard client/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
INTEG_SRC  := $(wildcard tests/integration/test_*.c)
HARNESS_SRC := $(filter-out $(INTEG_SRC),$(wildcard tests/integration/*.c))

# Unit and integration binaries share build/tests/: one name must not be both.
ifneq ($(filter $(notdir $(UNIT_SRC)),$(notdir $(INTEG_SRC))),)
$(error tests/unit and tests/integration both have $(filter $(notdir $(UNIT_SRC)),$(notdir $(INTEG_SRC))))
endif

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

PROTO_LIB  := $(BUILD)/libgocproto.a
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
DAEMON_LIBOBJ := $(filter-out $(BUILD)/obj/daemon/main.o,$(DAEMON_OBJ))

UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
INTEG_BIN  := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(INTEG_SRC))

PROGRAMS := $(BUILD)/gocd $(BUILD)/goc $(if $(BENCH_SRC),$(BUILD)/goc-bench)

.PHONY: all check check-asan unit integration demo bench soak deps install clean fuzz fuzz-build
all: $(PROGRAMS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(PROTO_LIB): $(call obj,$(PROTO_SRC))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/gocd: $(DAEMON_OBJ) $(PROTO_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/goc: $(call obj,$(CLI_SRC)) $(PROTO_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/goc-bench: $(call obj,$(BENCH_SRC)) $(PROTO_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests may link any daemon object except main.o.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(DAEMON_LIBOBJ) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(INTEG_BIN): $(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o $(call obj,$(HARNESS_SRC)) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@sh tests/deps.sh

# Every suite runs even when an earlier one fails; the last line is the
# total that CI reads: "N passed, N failed".
#
# A plain `make check` runs three configurations and adds them up:
#   1. every unit and integration suite of the normal build (build/);
#   2. the same suites built with AddressSanitizer + UBSan (build-asan/;
#      CHECK_SAN=0 skips it): a report, a leak at exit or undefined
#      behaviour fails the test that caused it;
#   3. the integration suites in VALGRIND_SUITES with every gocd they start
#      run under valgrind memcheck (CHECK_VALGRIND=0 skips it): any error or
#      a definite/indirect leak makes gocd exit 99, which fails the test.
#      Hostile input, the core flow with batches, and the faults: the paths
#      where gocd's own memory management (jalloc, req reuse) is exercised
#      and AddressSanitizer cannot see it (jalloc is off under ASan).
# `make SAN=asan check` runs only the sanitizer configuration, as before.
CHECK_SAN      ?= 1
CHECK_VALGRIND ?= 1
VALGRIND_SUITES ?= test_hostile test_e2e_core test_faults
VALGRIND_DIR   := build-valgrind
VALGRIND_OPTS  := --quiet --error-exitcode=99 --leak-check=full \
                  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
                  --num-callers=30

ASAN_BIN := $(patsubst $(BUILD)/%,build-asan/%,$(UNIT_BIN) $(INTEG_BIN))

ifeq ($(SAN),)
CHECK_RUNS := --build=$(BUILD) $(UNIT_BIN) $(INTEG_BIN) \
	$(if $(filter 1,$(CHECK_SAN)),--build=build-asan $(ASAN_BIN)) \
	$(if $(filter 1,$(CHECK_VALGRIND)),--build=$(VALGRIND_DIR) $(addprefix $(BUILD)/tests/,$(VALGRIND_SUITES)))
else
CHECK_RUNS := --build=$(BUILD) $(UNIT_BIN) $(INTEG_BIN)
endif

check: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(INTEG_BIN)
ifeq ($(SAN),)
	@if [ "$(CHECK_SAN)" = 1 ]; then \
		$(MAKE) --no-print-directory SAN=asan all $(ASAN_BIN); fi
	@if [ "$(CHECK_VALGRIND)" = 1 ]; then \
		$(MAKE) --no-print-directory $(VALGRIND_DIR)/gocd; fi
endif
	@sh tests/run-suites.sh $(CHECK_RUNS)

# A "gocd" that is the normal build run under valgrind: point GOCD_BUILD at
# this directory and the integration harness starts every gocd under memcheck
# (exec keeps the PID, so the harness's signals reach valgrind and gocd).
$(VALGRIND_DIR)/gocd: $(BUILD)/gocd Makefile
	@mkdir -p $(dir $@)
	@printf '#!/bin/sh\nexec valgrind %s %s "$$@"\n' '$(VALGRIND_OPTS)' '$(abspath $(BUILD)/gocd)' > $@.tmp
	@chmod +x $@.tmp
	@mv -f $@.tmp $@

check-asan:
	@$(MAKE) --no-print-directory SAN=asan check

# ---- fuzzing (tests/fuzz/) ------------------------------------------------
# libFuzzer targets, built with clang into build-fuzz/ (never mixed with the
# gcc objects).  `make fuzz` runs each for FUZZ_SECONDS; new corpus entries go
# to build-fuzz/corpus/T (the committed seeds in tests/fuzz/seeds/T are only
# read), and a crash or oracle failure leaves its reproducer in
# tests/fuzz/crashes/T-crash-<sha1> and fails the target.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE $(WARN) -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                $(PKG_CFLAGS) -Iproto -Idaemon
FUZZ_TARGETS := request config

$(FUZZ_DIR)/fuzz_request: tests/fuzz/fuzz_request.c $(PROTO_SRC) $(wildcard proto/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_request.c $(PROTO_SRC) $(LDLIBS)

$(FUZZ_DIR)/fuzz_config: tests/fuzz/fuzz_config.c daemon/config.c daemon/log.c daemon/config.h daemon/log.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_config.c daemon/config.c daemon/log.c $(LDLIBS)

fuzz-build: $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))

fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs $(FUZZ_CC) with libFuzzer (Debian: clang libclang-rt-14-dev)" >&2; exit 2; }
	@$(MAKE) --no-print-directory fuzz-build
	@mkdir -p tests/fuzz/crashes
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		echo "=== fuzz_$$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=tests/fuzz/crashes/$$t- \
			$(FUZZ_DIR)/corpus/$$t tests/fuzz/seeds/$$t; \
	done

demo: deps all
	@sh tests/demo.sh $(BUILD)

bench: deps all
	@GOCD_BUILD=$(BUILD) sh client/bench.sh

# The long run (not CI): two gocd, client churn, PostgreSQL restarts.
# SOAK_MINUTES (default 30).
soak: deps all
	@GOCD_BUILD=$(BUILD) sh tests/soak.sh

# install: PREFIX (default /usr/local) and DESTDIR (staging root) as usual.
# gocd goes to sbin, goc and goc-bench to bin, man pages to share/man, the
# unit to $(PREFIX)/lib/systemd/system (systemd reads /usr/local/lib/... and
# /lib/... alike; set UNITDIR to change it) with ExecStart pointing at
# $(SBINDIR).  gocd.conf goes to $(SYSCONFDIR)/gocd (default /etc/gocd) and
# an existing one is never overwritten.
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/gocd
	install -m 0755 $(BUILD)/gocd $(DESTDIR)$(SBINDIR)/gocd
	install -m 0755 $(BUILD)/goc $(DESTDIR)$(BINDIR)/goc
	$(if $(BENCH_SRC),install -m 0755 $(BUILD)/goc-bench $(DESTDIR)$(BINDIR)/goc-bench)
	install -m 0644 man/gocd.8 $(DESTDIR)$(MANDIR)/man8/gocd.8
	install -m 0644 man/goc.1 $(DESTDIR)$(MANDIR)/man1/goc.1
	install -m 0644 man/goc-bench.1 $(DESTDIR)$(MANDIR)/man1/goc-bench.1
	sed -e 's|/usr/local/sbin/gocd|$(SBINDIR)/gocd|' \
	    -e 's|/etc/gocd/gocd.conf|$(SYSCONFDIR)/gocd/gocd.conf|' \
	    systemd/gocd.service > $(DESTDIR)$(UNITDIR)/gocd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/gocd.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/gocd.service.tmp $(DESTDIR)$(UNITDIR)/gocd.service
	install -m 0644 systemd/gocd.socket $(DESTDIR)$(UNITDIR)/gocd.socket
	[ -e $(DESTDIR)$(SYSCONFDIR)/gocd/gocd.conf ] || \
		install -m 0644 conf/gocd.conf $(DESTDIR)$(SYSCONFDIR)/gocd/gocd.conf

clean:
	rm -rf build build-asan build-fuzz $(VALGRIND_DIR)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
