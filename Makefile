# Everything a fresh machine needs, from nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
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
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt \
		-e ./client -e ./format -e ./server -e ./trainer
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
	$(BIN)/ruff check client format server trainer tests

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache
