"""`lstmserve inspect`: load a model file exactly as `serve` does and report what it is and how it is
served."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from lstmserve.server.serve_flags import file_limits, load_options


def run_inspect(args: argparse.Namespace) -> int:
    from lstmserve.server.phases import Phases
    from lstmserve.server.process import configure_logging, start_tensorflow
    configure_logging(args.log_level or "warning")
    try:
        limits = file_limits(args)  # a bad flag is told before TensorFlow's seconds of import
        start_tensorflow(args.compilation_cache, Phases())
    except (ValueError, OSError, RuntimeError) as error:
        print(f"lstmserve inspect: {error}", file=sys.stderr)
        return 2
    from lstmserve.server.engine.base import EngineConfig
    from lstmserve.server.errors import ServingError
    from lstmserve.server.loading.load import load_model
    try:
        engine = EngineConfig(jit_compile=not args.no_xla, twin=not args.no_twin)
        model = load_model(args.path, options=load_options(args), engine=engine, limits=limits)
        report = describe(model)
        model.close()
    except ServingError as error:
        print(f"lstmserve inspect: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else _as_text(report))
    return 0


def describe(model) -> dict:
    """What `inspect` reports: the file and which Keras wrote it, its layers as written and as served,
    signature, heads, preparation, compatibility steps and a prediction on zeros."""
    from lstmserve.server.serving.heads import Mode
    zeros = {spec.name: np.zeros([1] + [d or 1 for d in spec.shape[1:]], spec.dtype)
             for spec in model.raw_inputs}
    prediction = model.predict(zeros, Mode.VALUES)
    source = model.source
    return {
        "file": str(source.path), "sha256": source.sha256,
        "size_bytes": source.size_bytes, "keras_version": source.keras_version,
        "backend": source.backend, "task": model.task,
        "written_by": source.written_by,
        "file_layers": list(source.file_layers),
        "layers": list(model.layers),
        "engine": model.engine.describe(),
        "inputs": [spec.describe() + f" '{spec.name}'" for spec in model.inputs],
        "outputs": [f"{h.spec.describe()} '{h.name}' activation={h.activation} "
                    f"modes={[m.value for m in h.modes]} labels={list(h.labels)}"
                    for h in model.heads],
        "preparation": model.preparation.describe(),
        "sessions": f"{model.sessions.kind}: {model.sessions.reason}"
                    + (f" ({model.sessions.state_bytes} bytes per session)" if model.sessions.kind != "none"
                       else ""),
        "forecast": _forecast_line(model),
        "compatibility_steps": list(model.compatibility_steps),
        "prediction_on_zeros": {name: out.tolist() for name, out in prediction.outputs.items()},
    }


def _forecast_line(model) -> str:
    support = model.forecasting
    if support is None or not support.supported:
        return f"no: {support.reason}" if support is not None else "no"
    names = model.preparation.raw_features
    feature = names[support.feature] if support.feature < len(names) else f"feature {support.feature}"
    beyond = "not beyond it" if support.features > 1 else f"{support.method(support.horizon + 1)} beyond it"
    return f"{feature}, {support.horizon} step(s) per answer ({beyond})"


def _as_text(report: dict) -> str:
    lines = []
    for key, value in report.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {item}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
