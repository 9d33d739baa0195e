# The two commands: `make run` (the default job on the embedded digits data) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := workdir/default

.PHONY: run test clean

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

run: $(VENV)/.installed
	rm -rf $(RUN_DIR)
	$(PY) -m vit_jax.main --config=configs/default.py:pretrain --workdir=$(RUN_DIR)/pretrain
	$(PY) -m vit_jax.main --config=configs/default.py:finetune --workdir=$(RUN_DIR)/finetune \
		--config.init_from=$(RUN_DIR)/pretrain

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=25

clean:
	rm -rf $(VENV) workdir
