"""Reads what an .h5 model file says about itself, with h5py only: before Keras sees the file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
from h5py import h5d, h5z

from lstmserve.server.runtime.errors import ModelLoadError, UnsafeModelError

# The HDF5 root attribute where lstmserve keeps its serving metadata, beside Keras's own.
METADATA_ATTR = "lstmserve_metadata"
METADATA_FORMAT = 1


@dataclass(frozen=True)
class ModelFile:
    """The facts of one .h5 file: Keras's own attributes and lstmserve's metadata."""

    path: Path
    sha256: str
    size_bytes: int
    keras_version: str
    backend: str
    model_config: dict[str, Any]
    serving: dict[str, Any] = field(default_factory=dict)
    # Keras's compile information (optimizer, loss, metrics): serving never reads it.
    has_training_config: bool = False


def read_model_file(path: str | Path) -> ModelFile:
    """Open, check and describe one Keras .h5 file; ModelLoadError says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            refuse_outside_storage(h5)
            attrs = dict(h5.attrs)
    except OSError as error:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({error})") from None
    if "model_config" not in attrs:
        raise ModelLoadError(
            f"{path} holds no 'model_config' attribute: it is not a whole Keras model saved with "
            "model.save() (weights-only files need the code that builds the model)"
        )
    return ModelFile(
        path=path, sha256=file_sha256(path), size_bytes=path.stat().st_size,
        keras_version=_text(attrs.get("keras_version", "unknown")),
        backend=_text(attrs.get("backend", "unknown")),
        model_config=_json_attr(path, attrs, "model_config"),
        serving=_json_attr(path, attrs, METADATA_ATTR) if METADATA_ATTR in attrs else {},
        has_training_config="training_config" in attrs,
    )


# Filters compiled into HDF5 and h5py. Any other filter id makes HDF5 search its plugin path and load a
# shared library named by the file: code from outside the file, refused like a Lambda layer.
BUILTIN_FILTERS = {
    h5z.FILTER_DEFLATE: "deflate", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32",
    h5z.FILTER_SZIP: "szip", h5z.FILTER_NBIT: "nbit", h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5z.FILTER_LZF: "lzf",
}


def refuse_outside_storage(h5: h5py.File) -> None:
    """Refuse every way an HDF5 file reaches outside itself: external links, virtual datasets,
    external raw storage (a dataset whose bytes are another file's, /etc/passwd say) and filters
    that HDF5 would load as plugins. Checked on each dataset's creation property list, before any
    dataset's data is read."""
    def check(name: str, link: h5py.HLObject) -> str | None:
        # A value returned stops the visit; an exception raised in here would surface from h5py's
        # C callback as a SystemError, not as the refusal.
        if isinstance(link, h5py.ExternalLink):
            return (f"{h5.filename}: '{name}' is an HDF5 external link to {link.filename}; "
                    "model files must be self-contained")
        if isinstance(link, h5py.HardLink) and h5.get(name, getclass=True) is h5py.Dataset:
            return _storage_problem(h5.filename, name, h5[name])
        return None
    problem = h5.visititems_links(check)
    if problem:
        raise UnsafeModelError(problem)


def _storage_problem(filename: str, name: str, dataset: h5py.Dataset) -> str | None:
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        return (f"{filename}: dataset '{name}' is a virtual dataset reading other files; "
                "model files must be self-contained")
    if plist.get_external_count():
        files = [plist.get_external(i)[0].decode(errors="replace")
                 for i in range(plist.get_external_count())]
        return (f"{filename}: dataset '{name}' keeps its bytes in external files {files}, not in the "
                "model file; model files must be self-contained")
    for index in range(plist.get_nfilters()):
        code, _, _, label = plist.get_filter(index)
        if code not in BUILTIN_FILTERS:
            return (f"{filename}: dataset '{name}' is compressed with HDF5 filter {code} "
                    f"({label.decode(errors='replace') or 'unnamed'}), which HDF5 would load as a "
                    f"plugin; allowed filters: {', '.join(sorted(BUILTIN_FILTERS.values()))}")
    return None


def write_serving_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Store lstmserve's metadata as one JSON root attribute; Keras ignores attributes it does not know."""
    with h5py.File(path, "a") as h5:
        h5.attrs[METADATA_ATTR] = json.dumps({"format": METADATA_FORMAT, **metadata})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_attr(path: Path, attrs: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        value = json.loads(_text(attrs[name]))
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{path}: attribute '{name}' is not valid JSON ({error})") from None
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
