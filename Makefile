# Keel: the commands README.md shows. Everything installs what it needs first.
VENV ?= .venv
PYTHON ?= python3
APT_PACKAGES = mmdebstrap erofs-utils dosfstools mtools fdisk e2fsprogs zstd xz-utils tar \
	qemu-utils qemu-system-x86 ovmf openssh-client python3-venv make git \
	busybox-static etcd-server cryptsetup-bin binutils sbsigntool systemd-boot-efi
STAMP = $(VENV)/.keel-installed
PYTEST_ARGS ?=

.PHONY: setup test unit lint bench demo clean

# Debian packages (needs root, as mmdebstrap does) and a venv with the project.
setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $(STAMP)

# The whole suite: unit tests, then real builds and QEMU boots.
test: setup
	$(VENV)/bin/ruff check composer hostd tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -v -rs --durations=40 $(PYTEST_ARGS)

unit: setup
	$(VENV)/bin/pytest -v -m 'not integration' $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check composer hostd tests bench
	$(VENV)/bin/ruff format --check composer hostd tests bench
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/run.py

# Build docker-host, boot it, run a container in it over SSH, leave it running.
demo: setup
	$(VENV)/bin/python -m composer.tools.demo

clean:
	rm -rf build
