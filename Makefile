# Everything a fresh machine needs, from nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# TensorFlow build: cpu (tensorflow-cpu on Linux x86_64; the default) or gpu (tensorflow with NVIDIA's
# CUDA libraries): `make setup TF=gpu`. Both builds install the same `tensorflow` package, so a switch
# removes the other first; the stamp names the build, so switching reinstalls.
TF     ?= cpu
OTHER_TF := $(if $(filter gpu,$(TF)),tensorflow-cpu,tensorflow)
STAMP  := $(VENV)/.installed-$(TF)
PORT   ?= 8500
MODELS := models
# lstmserve.v1, and the Open Inference Protocol (package inference) under the lstmserve namespace.
PROTOS := $(wildcard protos/lstmserve/v1/*.proto protos/lstmserve/inference/v2/*.proto)
GENERATED := $(patsubst protos/%.proto,client/%_pb2.py,$(PROTOS))
PYTEST_ARGS ?=

.PHONY: setup serve test test-fast proto check-proto lint demo-models airline-benchmark airline-forecast bench clean

setup: $(STAMP) $(GENERATED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python constraints.txt requirements-dev.txt client/pyproject.toml format/pyproject.toml \
		server/pyproject.toml trainer/pyproject.toml
	@case "$(TF)" in cpu|gpu) ;; *) echo "TF is '$(TF)'; expected cpu or gpu" >&2; exit 2 ;; esac
	if $(BIN)/pip show --quiet $(OTHER_TF) 2>/dev/null; then \
		$(BIN)/pip uninstall --quiet -y tensorflow tensorflow-cpu; fi
	rm -f $(VENV)/.installed-*
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt \
		-e ./client -e ./format -e './server[$(TF)]' -e './trainer[$(TF)]'
	# tf-keras (the tests' oracle for old files) asks for `tensorflow`, the GPU build, which would
	# overwrite tensorflow-cpu's files; it needs nothing else, and runs on either build.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt tf-keras
	touch $@

# Generated code is checked in; this rebuilds it whenever a .proto is newer.
$(GENERATED) &: $(PROTOS) | $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=client --pyi_out=client \
		--grpc_python_out=client $(PROTOS)

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=client --pyi_out=client \
		--grpc_python_out=client $(PROTOS)

$(MODELS)/seed.h5: | setup
	$(BIN)/lstmserve train --demo seed --output $@ --quiet

$(MODELS)/classifier.h5: | setup
	$(BIN)/lstmserve train --demo classifier --output $@ --quiet

demo-models: $(MODELS)/seed.h5 $(MODELS)/classifier.h5

serve: setup demo-models
	$(BIN)/lstmserve serve --model seed=$(MODELS)/seed.h5 \
		--model classifier=$(MODELS)/classifier.h5 --port $(PORT)

# The linter runs first, so CI fails on it too.
test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The trainer's quality bar on the airline series (prints RMSE next to persistence and seasonal naive).
airline-benchmark: setup
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m lstmserve.trainer.airline_accuracy

# Twelve-month forecasts through a real server's Forecast, by horizon against seasonal naive (README figures).
airline-forecast: setup
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m lstmserve.server.bench.airline_forecast --out docs

# The server against its limits (bare gRPC, the model in-process); JSON and PNG in bench-results/.
bench: setup
	$(BIN)/lstmserve bench --out bench-results $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check client format server trainer tests docs

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache
