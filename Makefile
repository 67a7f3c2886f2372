# Two commands: `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CODE := vigil shop collectors siem alerting dashboards loadtests playbooks

.PHONY: run test lint typecheck pytest system-deps system-deps-hint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $(STAMP)

run: $(STAMP) system-deps-hint
	$(VENV)/bin/vigil up

system-deps:
	scripts/install-system-deps

# `make run` works without haproxy (the shops are then reached directly); say so.
system-deps-hint:
	@command -v haproxy >/dev/null || echo "haproxy is not installed: running without a load balancer (make system-deps installs it)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(CODE)

pytest: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -n 2

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
