# Every target installs what it needs on a fresh Debian machine where you are
# root: system packages (FUSE, headers, pkg-config) when missing, uv in .tools/,
# and the locked Python dependencies in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := fuse3 libfuse3-dev pkg-config systemd strace patch docker-registry apache2-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The machine's global pip configuration points at extra local indexes; the
# project's own installs ignore it and use PyPI through the lockfile.
export PIP_CONFIG_FILE := /dev/null
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: all setup system-deps test test-fast lint typecheck demo bench-format bench-store bench-view bench-install bench-byname bench-remote bench-bytecode bench-viewmodes bench-corpus clean

all: test

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV) system-deps
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

# pyfuse3 with the project's patch (patches/pyfuse3/README.md): the locked sdist,
# checked against uv.lock's sha256, patched and built here. Without it the view
# runs in handle mode (slower); `uv sync` alone installs the unpatched release.
PYFUSE3_VERSION := 3.5.0
PYFUSE3_PATCH := patches/pyfuse3/pyfuse3-$(PYFUSE3_VERSION)-kernel-caching.patch
PYFUSE3_BUILD := build/pyfuse3

$(VENV)/.pyfuse3-patched: $(VENV)/.synced $(PYFUSE3_PATCH) patches/pyfuse3/fetch_sdist.py
	rm -rf $(PYFUSE3_BUILD)/pyfuse3-$(PYFUSE3_VERSION)
	sdist=$$($(PYTHON) patches/pyfuse3/fetch_sdist.py $(PYFUSE3_VERSION) $(PYFUSE3_BUILD)) && \
		tar -xzf "$$sdist" -C $(PYFUSE3_BUILD)
	patch -s -p1 -d $(PYFUSE3_BUILD)/pyfuse3-$(PYFUSE3_VERSION) < $(PYFUSE3_PATCH)
	rm $(PYFUSE3_BUILD)/pyfuse3-$(PYFUSE3_VERSION)/src/pyfuse3/__init__.c  # Cython output of the unpatched sources
	$(UV) pip install -q --python $(BIN)/python --no-deps --reinstall $(PYFUSE3_BUILD)/pyfuse3-$(PYFUSE3_VERSION)
	$(BIN)/python -c "import pyfuse3; assert 'cache_readdir' in dir(pyfuse3.FileInfo), 'pyfuse3 is not patched'"
	touch $@

# The editable install is a tree of links to the modules (pyproject.toml,
# [tool.uv]): made again when a module is added or removed. The list is
# rewritten only when it changes, so its time says when that happened.
PACKAGE_FILES := $(shell mkdir -p build && find src archive daemon client systemd -type f \
	\( -name '*.py' -o -name py.typed -o -name nwcache.service \) | LC_ALL=C sort > build/package-files.new && \
	if cmp -s build/package-files.new build/package-files; then rm build/package-files.new; \
	else mv build/package-files.new build/package-files; fi)

$(VENV)/.editable: build/package-files $(VENV)/.pyfuse3-patched
	$(UV) pip install -q --python $(BIN)/python --no-deps --reinstall-package nwcache -e .
	touch $@

setup: system-deps $(VENV)/.synced $(VENV)/.pyfuse3-patched $(VENV)/.editable

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The test command (README): lint, type check, then the whole suite.
test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# The inner loop (about 30 s here): ruff, then the tests that start no daemon
# process: the archive library, the store, the view's handlers, a mounted
# view's POSIX behaviour, the command line. `make test` stays the whole suite.
FAST_TESTS := tests/test_roundtrip.py tests/test_hostile.py tests/test_fuzz_findings.py tests/test_fuzz.py \
	tests/test_store.py tests/test_view_ops.py tests/test_unpack.py tests/test_zip_interop.py \
	tests/test_tree_source.py tests/test_remote.py tests/test_tarfmt.py tests/test_vectors.py \
	tests/test_cli.py tests/test_view_posix.py tests/test_notices.py tests/test_packaging.py

test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow" $(FAST_TESTS) $(PYTEST_ARGS)

# The product end to end on wheels the project builds itself (README).
demo: setup
	$(BIN)/python -m examples.demo

# Benchmark (not a test): real wheels from PyPI, downloaded at run time.
bench-format: setup
	$(BIN)/python -m bench.format $(BENCH_ARGS)

bench-store: setup
	$(BIN)/python -m bench.store $(BENCH_ARGS)

bench-view: setup
	$(BIN)/python -m bench.view $(BENCH_ARGS)

bench-install: setup
	$(BIN)/python -m bench.install $(BENCH_ARGS)

bench-byname: setup
	$(BIN)/python -m bench.byname $(BENCH_ARGS)

bench-remote: setup
	$(BIN)/python -m bench.remote $(BENCH_ARGS)

bench-bytecode: setup
	$(BIN)/python -m bench.bytecode $(BENCH_ARGS)

# The view's two modes (kernel-cached, handles) against a pip venv (docs/BENCH-VIEWMODES.md).
bench-viewmodes: setup
	$(BIN)/python -m bench.viewmodes $(BENCH_ARGS)

# Every variant of the format idea on popular wheels (docs/BENCH-CORPUS.md);
# e.g. BENCH_ARGS="--top 10".
bench-corpus: setup
	$(BIN)/python -m bench.corpus $(BENCH_ARGS)

.PHONY: bench-load faults fuzz pjdfstest

# 4 clients installing while 16 processes read through the view, 10 minutes (docs/BENCH-LOAD.md).
bench-load: setup
	$(BIN)/python -m bench.load --report docs/BENCH-LOAD.md $(BENCH_ARGS)

# 120 SIGKILLs of the daemon at random moments (docs/RELIABILITY.md); e.g. FAULTS_ARGS="--runs 40".
faults: setup
	$(BIN)/python -m tests.faults $(FAULTS_ARGS)

# pjdfstest against a registered venv in both view modes (docs/VIEW.md); PJDFSTEST is a
# checkout of it (no package registry has it). Needs autoconf, automake and prove.
pjdfstest: setup
	@[ -n "$(PJDFSTEST)" ] || { echo "error: PJDFSTEST is not set"; echo "hint: make pjdfstest PJDFSTEST=/path/to/a/pjdfstest/checkout"; exit 2; }
	$(SUDO) apt-get install -y -qq autoconf automake >/dev/null
	$(BIN)/python -m tests.pjdfstest --source $(PJDFSTEST) $(PJDFSTEST_ARGS)

# The archive fuzzer (docs/RELIABILITY.md); e.g. FUZZ_ARGS="--executions 100000".
fuzz: setup
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info
