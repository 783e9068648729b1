# The verbs people type. The build itself is CMake + Ninja in $(BUILD).
#   make            install missing Debian packages, build
#   make test       ... and run every test (unit, injector, end-to-end, a short soak)
#   make soak       ... and the soak: a training run under every command at once (SOAK_SECONDS)
#   make test-matrix  ... and the end-to-end tests on CPython 3.13 (torch 2.6), 3.14 (torch 2.14)
#                   and 3.15, each in a Debian 13/sid chroot cached in MATRIX_CACHE (needs root)
#   make demo       ... and run the demo: a small PyTorch training script, probed live
#   make install    install to $(PREFIX) (default /usr/local), stripped; PYTHONS gets the PROBE=1
#                   hook; INSTALL_DEBUG=1 adds the debug information beside, in .debug/ directories
#   make release    the shipped agent and CLI in $(RELEASE): static but for the C library, built
#                   against glibc 2.31 (a Debian 11 sysroot in MATRIX_CACHE), stripped, checked
#   make wheel      ... and the wheel, in $(DIST)
#   make deb        ... and the Debian package, in $(DIST)
#   make test-release  ... both, installed and tried in Debian 11, 13 and sid chroots (needs root)
#   make asan       unit tests under AddressSanitizer + UBSan
#   make clang      build with clang++ (CI builds with g++)
#   make fuzz       the request fuzz target (libFuzzer, clang), for FUZZ_SECONDS (default 60)
#   make format / make lint / make bench / make clean
PREFIX ?= /usr/local
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
# Interpreters whose site-packages get probing.pth at install (PROBE=1 support).
PYTHONS ?= $(shell realpath /usr/bin/python3 2>/dev/null) $(shell python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
JOBS ?= $(shell nproc)
SOURCES = $(shell git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 2>/dev/null)

.PHONY: all deps build test test-matrix soak demo install release wheel deb test-release asan clang fuzz format lint bench clean
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 60
MATRIX_CACHE ?= /var/cache/probing-matrix
RELEASE ?= build-release
DIST ?= dist

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	@scripts/install-deps.sh --test
	scripts/run-tests.sh $(BUILD)

test-matrix: build
	@scripts/install-deps.sh --matrix
	PROBING_MATRIX_CACHE=$(MATRIX_CACHE) scripts/test-matrix.sh $(BUILD)

soak: build
	PROBING_BUILD=$(abspath $(BUILD)) PROBING_SOAK_SECONDS=$(SOAK_SECONDS) \
	  /usr/bin/python3 -m pytest tests/e2e/test_soak.py -q -rs -s -p no:cacheprovider

demo: build
	scripts/demo.sh $(BUILD)

install: build
	@if [ "$(INSTALL_DEBUG)" = 1 ]; then \
	  cmake --install $(BUILD) --prefix $(PREFIX) && \
	  scripts/split-debug.sh $(PREFIX)/bin/probing $(PREFIX)/bin/.debug && \
	  scripts/split-debug.sh $(PREFIX)/lib/probing/libprobing.so $(PREFIX)/lib/probing/.debug; \
	else cmake --install $(BUILD) --prefix $(PREFIX) --strip; fi
	scripts/install-pth.sh $(BUILD) $(PREFIX) $(PYTHONS)

release: deps
	@scripts/install-deps.sh --matrix
	PROBING_MATRIX_CACHE=$(MATRIX_CACHE) scripts/release.sh $(RELEASE)

wheel: release
	python3 scripts/make-wheel.py $(RELEASE) $(DIST)

deb: release
	scripts/make-deb.sh $(RELEASE) $(DIST)

# tests/release, then the end-to-end tests of what static linking could break (TLS, exit, torch,
# libdw, libedit, crash reports, inject) on the shipped files: the stage, with the build's probing.pth.
test-release: wheel deb
	@scripts/install-deps.sh --test
	scripts/matrix-chroot.sh trixie $(MATRIX_CACHE)
	scripts/matrix-chroot.sh sid $(MATRIX_CACHE)
	PROBING_DIST=$(abspath $(DIST)) PROBING_RELEASE=$(abspath $(RELEASE)) PROBING_MATRIX_CACHE=$(MATRIX_CACHE) \
	  /usr/bin/python3 -m pytest tests/release -q -rs -p no:cacheprovider
	rm -rf $(RELEASE)/e2e && cp -a $(RELEASE)/stage $(RELEASE)/e2e && cp $(RELEASE)/build/lib/probing/probing.pth $(RELEASE)/e2e/lib/probing/
	PROBING_BUILD=$(abspath $(RELEASE))/e2e /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider \
	  tests/e2e/test_remote.py tests/e2e/test_exit.py tests/e2e/test_torch.py tests/e2e/test_backtrace_native.py \
	  tests/e2e/test_repl.py tests/e2e/test_crash.py tests/e2e/test_inject.py

asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPROBING_SANITIZE=ON
	cmake --build build-asan -j $(JOBS) --target unit_tests
	ASAN_OPTIONS=detect_leaks=1 build-asan/tests/unit_tests

clang: deps
	@scripts/install-deps.sh --dev
	cmake -S . -B build-clang -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build build-clang -j $(JOBS)

fuzz: deps
	scripts/run-fuzz.sh build-fuzz $(FUZZ_SECONDS)

format:
	@scripts/install-deps.sh --dev
	clang-format -i $(SOURCES)

lint: build
	@scripts/install-deps.sh --dev
	clang-tidy -p $(BUILD) --quiet $(filter %.cpp,$(filter src/%,$(SOURCES)))

bench: build
	/usr/bin/python3 bench/eval_latency.py --build $(BUILD)
	/usr/bin/python3 bench/inject.py --build $(BUILD)
	/usr/bin/python3 bench/backtrace.py --build $(BUILD)
	/usr/bin/python3 bench/sql.py --build $(BUILD)
	/usr/bin/python3 bench/torch_overhead.py --build $(BUILD)
	/usr/bin/python3 bench/profile.py --build $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-clang $(RELEASE) $(DIST)
