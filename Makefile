# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test quick unit install clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PYSPARK_PYTHON=$(abspath $(PY)) $(VENV)/bin/semid-demo

# Everything, on two pytest-xdist workers: the shared-session tests stay together on one
# (tests/conftest.py groups them), the tests that start processes of their own fill both.
test: $(STAMP)
	PYSPARK_PYTHON=$(abspath $(PY)) PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The fast loop: tier 1 (no JVM) and tier 2 (the shared Spark session); tests/conftest.py
# marks every test with its tier. `make unit` is tier 1 alone.
quick: $(STAMP)
	PYSPARK_PYTHON=$(abspath $(PY)) PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -m "unit or spark" $(PYTEST_ARGS)
unit: $(STAMP)
	PYSPARK_PYTHON=$(abspath $(PY)) PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -m unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) semid-demo .pytest_cache

# The spark-submit recipe's artefacts (docs/deploy.md: "Running on a cluster with spark-submit").
.PHONY: wheel pack-env
wheel: $(STAMP)
	PYTHON=$(abspath $(PY)) bash scripts/build_wheel.sh dist
pack-env: $(STAMP)
	bash scripts/pack_env.sh --python $(abspath $(PY)) --out dist
