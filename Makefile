# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(PYTHON) -m uv
VENV := .venv
PY := $(VENV)/bin/python
LAYER := build/lambda-layer
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: setup test demo bench synth deploy lambda-layer lint clean

setup: $(VENV)/.synced node_modules/.installed

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# What the Lambda functions need beyond the runtime and the managed SDK for pandas layer (Powertools with its
# tracer, pydantic, fastjsonschema, pybase64), built for Lambda's platform from the lock file (no Docker
# needed), without the AWS SDK and its dependencies, which the runtime provides; and the adjust function's
# drift layer (the `lambda-drift` group: river, scipy, numpy), which replaces SDK for pandas there; and the
# numpy layer (the `lambda-serving` group) of serving, ingest and the workflow's steps; and the cleaner's and
# eraser's arrow layer (the `lambda-arrow` group: pyarrow and numpy, less what cdk/layer_trim.py leaves out).
# No function takes the SDK for pandas layer.
DRIFT_LAYER := build/lambda-drift-layer
SERVING_LAYER := build/lambda-serving-layer
ARROW_LAYER := build/lambda-arrow-layer
lambda-layer: $(LAYER)/.built $(DRIFT_LAYER)/.built $(SERVING_LAYER)/.built $(ARROW_LAYER)/.built
$(LAYER)/.built: uv.lock | $(VENV)/.synced
	rm -rf $(LAYER) && mkdir -p $(LAYER)/python
	$(UV) export --frozen --only-group lambda --no-hashes --no-emit-project --quiet \
		| grep -vE '^(boto3|botocore|s3transfer|jmespath|python-dateutil|six|urllib3)==' > build/lambda-requirements.txt
	$(UV) pip install --quiet --no-deps --target $(LAYER)/python --python-platform x86_64-manylinux_2_28 \
		--python-version 3.12 --only-binary :all: -r build/lambda-requirements.txt
	@touch $@
$(DRIFT_LAYER)/.built: uv.lock | $(VENV)/.synced
	rm -rf $(DRIFT_LAYER) && mkdir -p $(DRIFT_LAYER)/python
	$(UV) export --frozen --only-group lambda-drift --no-hashes --no-emit-project --quiet \
		-o build/lambda-drift-requirements.txt
	$(UV) pip install --quiet --target $(DRIFT_LAYER)/python --python-platform x86_64-manylinux_2_28 \
		--python-version 3.12 --only-binary :all: -r build/lambda-drift-requirements.txt
	@touch $@
$(SERVING_LAYER)/.built: uv.lock | $(VENV)/.synced
	rm -rf $(SERVING_LAYER) && mkdir -p $(SERVING_LAYER)/python
	$(UV) export --frozen --only-group lambda-serving --no-hashes --no-emit-project --quiet \
		-o build/lambda-serving-requirements.txt
	$(UV) pip install --quiet --target $(SERVING_LAYER)/python --python-platform x86_64-manylinux_2_28 \
		--python-version 3.12 --only-binary :all: -r build/lambda-serving-requirements.txt
	@touch $@
$(ARROW_LAYER)/.built: uv.lock cdk/layer_trim.py | $(VENV)/.synced
	rm -rf $(ARROW_LAYER) && mkdir -p $(ARROW_LAYER)/python
	$(UV) export --frozen --only-group lambda-arrow --no-hashes --no-emit-project --quiet \
		-o build/lambda-arrow-requirements.txt
	$(UV) pip install --quiet --target $(ARROW_LAYER)/python --python-platform x86_64-manylinux_2_28 \
		--python-version 3.12 --only-binary :all: -r build/lambda-arrow-requirements.txt
	$(PY) -m cdk.layer_trim $(ARROW_LAYER)/python
	@touch $@

test: setup lambda-layer
	$(PY) -m pytest -n 2 --dist loadfile -q

demo: setup
	$(VENV)/bin/feedbackloop demo

# every benchmark; writes docs/benchmarks.json and the report rendered from it, docs/benchmarks.md (committed:
# the README cites only figures found there)
bench: setup
	$(VENV)/bin/feedbackloop bench all --json docs/benchmarks.json --markdown docs/benchmarks.md

synth: setup lambda-layer
	npx --no-install cdk synth --quiet --no-notices

deploy: synth
	npx --no-install cdk deploy --all --no-notices --require-approval broadening

lint: setup
	$(VENV)/bin/ruff check feedbackloop lambdas cdk tests

clean:
	rm -rf build cdk.out .feedbackloop bench-results
