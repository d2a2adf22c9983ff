"""lstmserve's metadata inside a Keras .h5 file: one JSON root attribute beside Keras's own.

Keras ignores root attributes it does not know, so `keras.models.load_model(path, compile=False)` still
opens a file the trainer wrote; the server reads the attribute as untrusted input and checks its shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py

from lstmserve.format.errors import FormatError

METADATA_ATTR = "lstmserve_metadata"
METADATA_FORMAT = 1
TASKS = ("regression", "classification")
# Metadata is echoed to every client that asks for it: labels and training provenance stay summaries.
MAX_LABEL_CHARS = 1024
MAX_TRAINING_JSON_CHARS = 65536


def write_serving_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Store the metadata (task, labels, preparation, training provenance) in the file at `path`."""
    parse_serving_metadata(json.dumps(metadata))  # what the server would refuse is never written
    with h5py.File(path, "a") as h5:
        h5.attrs[METADATA_ATTR] = json.dumps({"format": METADATA_FORMAT, **metadata})


def parse_serving_metadata(text: str) -> dict[str, Any]:
    """The metadata as a dict with checked types; FormatError says what is wrong with it."""
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise FormatError(f"attribute '{METADATA_ATTR}' is not valid JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise FormatError(f"attribute '{METADATA_ATTR}' must be a JSON object; got {type(metadata).__name__}")
    if metadata.get("format", METADATA_FORMAT) != METADATA_FORMAT:
        raise FormatError(f"attribute '{METADATA_ATTR}' is format {metadata.get('format')!r:.40}; this "
                          f"version reads format {METADATA_FORMAT}")
    if metadata.get("task") not in (None, "", *TASKS):
        raise FormatError(f"metadata task is {metadata['task']!r:.40}; expected one of {TASKS}")
    _check_labels(metadata.get("labels"))
    for key in ("preparation", "training"):
        if not isinstance(metadata.get(key, {}), dict):
            raise FormatError(f"metadata '{key}' must be a JSON object; got {type(metadata[key]).__name__}")
    if len(json.dumps(metadata.get("training", {}))) > MAX_TRAINING_JSON_CHARS:
        raise FormatError(f"metadata 'training' is longer than {MAX_TRAINING_JSON_CHARS:,} characters of "
                          "JSON; it is provenance, not data")
    _check_forecast(metadata.get("forecast"))
    return metadata


def declare_forecast(path: str | Path, feature: str | int = 0, horizon: int = 1) -> None:
    """Say that the model in `path` forecasts: its output is the next `horizon` values of input `feature`
    (a raw feature's name, or its index). The server's Forecast serves only models that say so."""
    with h5py.File(path, "r") as h5:
        text = h5.attrs.get(METADATA_ATTR)
    metadata = parse_serving_metadata(text if isinstance(text, str) else (text or b"{}").decode())
    write_serving_metadata(path, {k: v for k, v in metadata.items() if k != "format"}
                           | {"forecast": {"feature": feature, "horizon": horizon}})


def _check_forecast(block: Any) -> None:
    """{"feature": name or index, "horizon": steps}: the output is the next values of that input feature."""
    if block is None:
        return
    feature, horizon = (block.get("feature"), block.get("horizon")) if isinstance(block, dict) else (0, 0)
    if (not isinstance(feature, (str, int)) or isinstance(feature, bool) or type(horizon) is not int
            or not 0 < horizon <= 100_000):
        raise FormatError("metadata 'forecast' must be {\"feature\": name or index, \"horizon\": 1..100000}; "
                          f"got {block!r:.100}")


def _check_labels(labels: Any) -> None:
    """A list of class names for a single output, or {output name: list} for several."""
    lists = labels.values() if isinstance(labels, dict) else [labels] if labels is not None else []
    for names in lists:
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise FormatError(f"metadata labels must be lists of strings; got {labels!r:.100}")
        if any(len(name) > MAX_LABEL_CHARS for name in names):
            raise FormatError(f"metadata labels must be at most {MAX_LABEL_CHARS} characters each")
