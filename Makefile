# Corral — GNU make build. `make` builds build/corral; `make test` runs every
# test; `make run` starts the server with its embedded worker; `make check`
# adds warnings-as-errors, layering and banned-call checks.
# SANITIZE=address,undefined builds everything with those sanitizers into build-san/.

CC ?= cc
SANITIZE ?=
BUILD ?= $(if $(findstring thread,$(SANITIZE)),build-tsan,$(if $(SANITIZE),build-san,build))
PKGS := libevent libevent_pthreads libevent_openssl openssl libcurl jansson sqlite3 libsodium libpq
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
        -Wno-format-nonliteral
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu17 $(WARN) -Isrc -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -ldl -lm
# Hardening (checked by scripts/check-hardening.sh in `make check`): fortified
# libc calls, stack protector, position-independent executables, full RELRO.
# Sanitizer builds go without: ASan and fortify replace the same calls.
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
else
CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fPIE
EXE_LDFLAGS := -pie -Wl,-z,relro,-z,now
endif
ifeq ($(WERROR),1)
CFLAGS += -Werror
endif

LIB_SRCS := $(sort $(wildcard src/base/*.c src/http/*.c src/api/*.c src/gateway/*.c src/store/*.c src/agent/*.c src/sched/*.c src/checks/*.c src/console/*.c))
# The web console's files, built into the binary (tools/embed): no files to install.
CONSOLE_FILES := console/index.html console/app.css console/app.js
CMD_SRCS := $(sort $(wildcard src/cmd/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/gen/console_assets.o
CMD_OBJS := $(CMD_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
# test_store runs twice: on SQLite, and as test_store_pg on a private PostgreSQL
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%) $(BUILD)/tests/test_store_pg
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%-replay)
FAKE_NVML := $(BUILD)/fakes/nvml/libnvidia-ml.so.1 $(BUILD)/fakes/nvml-nouuid/libnvidia-ml.so.1
BENCH_BINS := $(BUILD)/bench/statusload $(BUILD)/bench/sched $(BUILD)/bench/upstream $(BUILD)/bench/gwload
TOOLS := $(BUILD)/tools/mkmodel
# The GGUF writer makes test models: tests and tools link it, the binary does not.
TESTLIB := $(BUILD)/tools/gguf_write.o

.PHONY: all deps test unit integration faults fuzz-replay run check clean bench fuzz fuzz-run engines install
all: $(BUILD)/corral

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tools/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -o $@ $<

$(BUILD)/gen/console_assets.c: $(BUILD)/tools/embed $(CONSOLE_FILES)
	@mkdir -p $(dir $@)
	$(BUILD)/tools/embed $@ $(CONSOLE_FILES)

$(BUILD)/gen/console_assets.o: $(BUILD)/gen/console_assets.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcorral.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/corral: $(CMD_OBJS) $(BUILD)/libcorral.a
	$(CC) $(LDFLAGS) $(EXE_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcorral.a $(TESTLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itools -o $@ $< $(TESTLIB) $(BUILD)/libcorral.a $(LDFLAGS) $(EXE_LDFLAGS) $(LDLIBS) -lcriterion $(shell pkg-config --libs sqlite3)

$(BUILD)/tests/test_store_pg: tests/unit/test_store.c $(BUILD)/libcorral.a $(TESTLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSTORE_PG -Itools -o $@ $< $(TESTLIB) $(BUILD)/libcorral.a $(LDFLAGS) $(EXE_LDFLAGS) $(LDLIBS) -lcriterion

$(BUILD)/fakes/nvml/libnvidia-ml.so.1: tests/fakes/nvml/fake_nvml.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $< $(LDFLAGS) $(shell pkg-config --libs jansson)

$(BUILD)/fakes/nvml-nouuid/libnvidia-ml.so.1: tests/fakes/nvml/fake_nvml.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFAKE_NVML_OMIT_UUID -fPIC -shared -o $@ $< $(LDFLAGS) $(shell pkg-config --libs jansson)

# Fuzz targets: replayed over their corpus in `make test` (any compiler);
# `make fuzz` builds libFuzzer binaries with clang for real fuzzing.
$(BUILD)/fuzz/%-replay: tests/fuzz/%.c tests/fuzz/replay_main.c $(BUILD)/libcorral.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< tests/fuzz/replay_main.c $(BUILD)/libcorral.a $(LDFLAGS) $(EXE_LDFLAGS) $(LDLIBS)

# The library once with the fuzzer's instrumentation, then one binary per target.
FUZZ_CFLAGS := -std=gnu17 -g -O1 -Isrc -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	-fsanitize=fuzzer-no-link,address,undefined
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=build-fuzz/%.o)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/%)
build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
build-fuzz/libcorral.a: $(FUZZ_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libcorral.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< build-fuzz/libcorral.a -o $@ $(LDLIBS)
fuzz: $(FUZZ_BINS)
	@echo "run e.g.: build-fuzz/fuzz_gguf -max_total_time=60 tests/fuzz/corpus/fuzz_gguf, or make fuzz-run"

# Every fuzz target for FUZZ_SECONDS, starting from its corpus (new finds go
# to build-fuzz/corpus, not into the repository); a crash fails the run.
FUZZ_SECONDS ?= 30
fuzz-run: fuzz
	@set -e; for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); mkdir -p build-fuzz/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS) s)"; \
	  build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build-fuzz/$$n- \
	    build-fuzz/corpus/$$n tests/fuzz/corpus/$$n > build-fuzz/$$n.log 2>&1 || { tail -40 build-fuzz/$$n.log; exit 1; }; \
	  grep -E "^stat::number_of_executed_units" build-fuzz/$$n.log; done

$(BUILD)/tools/gguf_write.o: tools/gguf_write.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tools/%: tools/%.c $(BUILD)/libcorral.a $(TESTLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itools -o $@ $< $(TESTLIB) $(BUILD)/libcorral.a $(LDFLAGS) $(EXE_LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libcorral.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libcorral.a $(LDFLAGS) $(EXE_LDFLAGS) $(LDLIBS)

unit: $(UNIT_BINS) $(FAKE_NVML)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; case $$t in *_pg) pg=scripts/pg-test.sh\ run;; *) pg=;; esac; \
	  CORRAL_BUILD=$(BUILD) $$pg $$t --jobs 1 2>&1 | tee $(BUILD)/unit.out; \
	  if grep -q "ERROR: [A-Za-z]*Sanitizer\|runtime error:" $(BUILD)/unit.out; then echo "sanitizer findings in $$t"; exit 1; fi; \
	  grep -q "Failing: 0 | Crashing: 0" $(BUILD)/unit.out; done

fuzz-replay: $(FUZZ_REPLAY)
	@set -e; for t in $(FUZZ_REPLAY); do n=$$(basename $$t -replay); \
	  $$t tests/fuzz/corpus/$$n; done

# The real llama.cpp engines (llama-server, ggml-rpc-server), built once from
# node-llama-cpp@3.21.1's bundled source and cached outside the repository.
engines: deps
	@scripts/llama-build.sh

# The integration tests run real llama.cpp engines (see `engines`).
integration: $(BUILD)/corral $(FAKE_NVML) $(TOOLS)
	CORRAL_LLAMA_BIN=$$(scripts/llama-build.sh) && export CORRAL_LLAMA_BIN && \
	  CORRAL_BUILD=$(BUILD) python3 tests/integration/run.py

# The fault suite (tests/faults): a full disk, PostgreSQL away under load.
faults: $(BUILD)/corral $(FAKE_NVML) $(TOOLS)
	CORRAL_LLAMA_BIN=$$(scripts/llama-build.sh) && export CORRAL_LLAMA_BIN && \
	  CORRAL_BUILD=$(BUILD) python3 tests/faults/run.py

test: deps engines
	$(MAKE) WERROR=1 all $(UNIT_BINS) $(FUZZ_REPLAY) $(FAKE_NVML)
	$(MAKE) unit fuzz-replay
	$(MAKE) integration

check: deps
	$(MAKE) WERROR=1 all $(UNIT_BINS) $(FUZZ_REPLAY) $(FAKE_NVML) $(BENCH_BINS)
	scripts/check-layering.sh
	scripts/check-banned.sh
	scripts/check-hardening.sh $(BUILD)/corral
	rm -rf build-scan
	scan-build --status-bugs -o build-scan/report $(MAKE) BUILD=build-scan CC=clang all

bench: $(BUILD)/corral $(BENCH_BINS) $(TOOLS) $(FAKE_NVML)
	python3 bench/run_status.py --build $(BUILD) $(BENCH_ARGS)
	$(BUILD)/bench/sched $(BENCH_ARGS)
	CORRAL_LLAMA_BIN=$$(scripts/llama-build.sh) python3 bench/run_engines.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_gateway.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_gateway.py --build $(BUILD) --tls $(BENCH_ARGS)
	python3 bench/run_usage.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_doctor.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_console.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_hub.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_failover.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_servers.py --build $(BUILD) $(BENCH_ARGS)
	python3 bench/run_hostile.py --build $(BUILD) $(BENCH_ARGS)
	CORRAL_LLAMA_BIN=$$(scripts/llama-build.sh) python3 bench/run_rolling.py --build $(BUILD) $(BENCH_ARGS)

# The engines `make engines` built are found without any variable.
run: deps all $(TOOLS)
	@mkdir -p .data
	CORRAL_ENGINE_PATH="$$(scripts/llama-build.sh --path)$${CORRAL_ENGINE_PATH:+:$$CORRAL_ENGINE_PATH}" \
	  $(BUILD)/corral server --data-dir .data $(RUN_ARGS)

clean:
	rm -rf build build-san build-tsan build-fuzz build-scan

-include $(LIB_OBJS:.o=.d) $(CMD_OBJS:.o=.d) $(wildcard build-fuzz/src/*/*.d)

# make install [DESTDIR=] [PREFIX=/usr/local]: the binary, the docs, systemd
# units (corral-server, corral-worker) and their environment files, which are
# kept when they exist. Then: systemctl daemon-reload; systemctl enable --now corral-server.
PREFIX ?= /usr/local
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
DOCDIR ?= $(PREFIX)/share/doc/corral
MANDIR ?= $(PREFIX)/share/man
install: $(BUILD)/corral
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/corral $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BUILD)/corral $(DESTDIR)$(PREFIX)/bin/corral
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(MANDIR)/man1
	scripts/mkman.sh $(BUILD)/corral > $(DESTDIR)$(MANDIR)/man1/corral.1 && chmod 0644 $(DESTDIR)$(MANDIR)/man1/corral.1
	for u in corral-server corral-worker; do \
	  sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	    dist/systemd/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service; \
	done
	for e in server worker; do \
	  [ -e $(DESTDIR)$(SYSCONFDIR)/corral/$$e.env ] || install -m 0600 dist/systemd/$$e.env $(DESTDIR)$(SYSCONFDIR)/corral/$$e.env; \
	done
	@echo "installed $(DESTDIR)$(PREFIX)/bin/corral and the units in $(DESTDIR)$(UNITDIR)"
