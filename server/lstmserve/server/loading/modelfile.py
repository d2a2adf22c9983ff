"""Reads one .h5 model file once, with h5py only, before Keras sees anything of it.

The bytes are read a single time: the sha256, Keras's attributes, lstmserve's metadata and the weights
all come from that one read, so a file replaced while it is being loaded cannot mix two versions. Every
way HDF5 has of reaching outside the file is refused, and every size is checked before it is allocated.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5z

from lstmserve.format.errors import FormatError
from lstmserve.format.metadata import METADATA_ATTR, parse_serving_metadata
from lstmserve.server.errors import ModelLoadError, UnsafeModelError


@dataclass(frozen=True)
class FileLimits:
    """What a model file may cost before it is refused: its bytes (and its weights' declared bytes,
    which compression can make far larger than the file), the bytes of any one attribute it holds
    (model_config, lstmserve_metadata, lists of weight names) and how deep its config may nest."""

    max_model_bytes: int = 1 << 30
    max_config_depth: int = 100
    max_attribute_bytes: int = 16 << 20


@dataclass(frozen=True)
class SavedWeight:
    """One weight dataset as the file declares it; its values are read only once the built layer's
    variable is known to have this shape."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype


DEFAULT_LIMITS = FileLimits()


@dataclass(frozen=True)
class ModelFile:
    """The facts of one .h5 file: Keras's own attributes, lstmserve's metadata and the saved weights."""

    path: Path
    sha256: str
    size_bytes: int
    keras_version: str
    backend: str
    model_config: dict[str, Any]
    serving: dict[str, Any] = field(default_factory=dict)
    # Keras's compile information (optimizer, loss, metrics): serving never reads it.
    has_training_config: bool = False
    # h5 layer group name -> that layer's weight datasets in saved order, for layers that saved any.
    weights: dict[str, list[SavedWeight]] = field(default_factory=dict, repr=False)
    data: bytes = field(default=b"", repr=False)

    @contextmanager
    def reading(self) -> Iterator[Callable[[SavedWeight], np.ndarray]]:
        """A reader of saved weights' values, from the bytes read at first (never the disk again)."""
        with h5py.File(io.BytesIO(self.data), "r") as h5:
            yield lambda weight: h5[weight.path][()]


def read_model_file(path: str | Path, limits: FileLimits = DEFAULT_LIMITS) -> ModelFile:
    """Read, check and describe one Keras .h5 file; ModelLoadError says what is wrong with it."""
    path = Path(path)
    data = _read_bytes(path, limits.max_model_bytes)
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            refuse_outside_storage(h5, path)
            attrs = _root_attributes(h5, path, limits.max_attribute_bytes)
            model_config = _config(path, attrs, limits.max_config_depth)
            weights = _weight_datasets(h5, path, limits)
    except OSError as error:
        raise ModelLoadError(f"{path} is not a readable HDF5 file ({_short(error)})") from None
    try:
        serving = parse_serving_metadata(attrs[METADATA_ATTR]) if METADATA_ATTR in attrs else {}
    except FormatError as error:
        raise ModelLoadError(f"{path}: {error}") from None
    return ModelFile(
        path=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        keras_version=attrs.get("keras_version", "unknown"), backend=attrs.get("backend", "unknown"),
        model_config=model_config, serving=serving,
        has_training_config="training_config" in attrs, weights=weights, data=data,
    )


def _read_bytes(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ModelLoadError(f"{path} is larger than the {limit:,}-byte limit (--max-model-bytes)")
    return data


def _root_attributes(h5: h5py.File, path: Path, limit: int) -> dict[str, str]:
    """The root attributes serving reads, as text (Keras stores them as strings or bytes)."""
    wanted = ("model_config", "keras_version", "backend", METADATA_ATTR, "training_config")
    attrs = {name: _text(_attribute(h5, name, path, limit)) for name in wanted if name in h5.attrs}
    if "model_config" not in attrs:
        raise ModelLoadError(
            f"{path} holds no 'model_config' attribute: it is not a whole Keras model saved with "
            "model.save() (weights-only files need the code that builds the model)"
        )
    return attrs


def _config(path: Path, attrs: dict[str, str], max_depth: int) -> dict[str, Any]:
    try:
        config = json.loads(attrs["model_config"])
    except ValueError as error:
        raise ModelLoadError(f"{path}: attribute 'model_config' is not valid JSON ({error})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: attribute 'model_config' nests deeper than the "
                             f"{max_depth}-level limit (--max-config-depth)") from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ModelLoadError(f"{path}: attribute 'model_config' must be a JSON object naming a "
                             f"class_name; got {type(config).__name__}")
    depth = nesting_depth(config)
    if depth > max_depth:
        raise ModelLoadError(f"{path}: attribute 'model_config' nests {depth} levels deep; the limit is "
                             f"{max_depth} (--max-config-depth)")
    return config


def nesting_depth(value: Any) -> int:
    """How many lists and objects deep a parsed JSON value goes, without recursing in Python."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _attribute(obj: h5py.HLObject, name: str, path: Path, limit: int) -> Any:
    """One attribute's value, its declared size checked first: an attribute's dataspace can declare
    far more elements than the file holds, and h5py allocates them all before reading."""
    attribute = obj.attrs.get_id(name)
    count = int(np.prod(attribute.shape, dtype=object)) if attribute.shape else 1
    declared = count * max(attribute.dtype.itemsize, 1)
    value = obj.attrs[name] if declared <= limit else None
    if value is None or _stored_chars(value) > limit:
        raise ModelLoadError(f"{path}: attribute '{_short(name)}' of '{obj.name}' holds more than the "
                             f"{limit:,}-byte limit (--max-attribute-bytes)")
    return value


def _stored_chars(value: Any) -> int:
    """Characters of variable-length strings, which live outside the attribute's declared size."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return sum(len(item) if isinstance(item, (str, bytes)) else 0 for item in value.flat)
    return 0


def _weight_datasets(h5: h5py.File, path: Path, limits: FileLimits) -> dict[str, list[SavedWeight]]:
    """Layer name -> its weight datasets in saved order, nothing read yet; every dataset's declared size
    is summed and checked against the limit (a compressed dataset can declare terabytes in a few bytes)."""
    group = h5["model_weights"] if "model_weights" in h5 else h5
    layers = {}
    for name in _names(group, "layer_names", path, limits.max_attribute_bytes):
        layer_group = _member(group, name, h5py.Group, path)
        layers[name] = [_member(layer_group, weight, h5py.Dataset, path)
                        for weight in _names(layer_group, "weight_names", path, limits.max_attribute_bytes)]
    declared = sum(_declared_bytes(d) for datasets in layers.values() for d in datasets)
    if declared > limits.max_model_bytes:
        raise ModelLoadError(f"{path}: weights declare {declared:,} bytes; the limit is "
                             f"{limits.max_model_bytes:,} (--max-model-bytes)")
    return {name: [SavedWeight(d.name, tuple(d.shape), d.dtype) for d in datasets]
            for name, datasets in layers.items() if datasets}


def _names(group: h5py.Group, attribute: str, path: Path, limit: int) -> list[str]:
    if attribute not in group.attrs:
        return []
    values = _attribute(group, attribute, path, limit)
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        raise ModelLoadError(f"{path}: attribute '{attribute}' of '{group.name}' must be a list of names; "
                             f"got {type(values).__name__}")
    return _strings(values)


def _member(group: h5py.Group, name: str, kind: type, path: Path) -> Any:
    item = group.get(name)
    if not isinstance(item, kind):
        raise ModelLoadError(f"{path}: '{_short(name)}' listed in '{group.name}' is "
                             f"{'missing' if item is None else type(item).__name__}, not a {kind.__name__}")
    return item


def _declared_bytes(dataset: h5py.Dataset) -> int:
    if dataset.dtype.kind not in "fiub":  # a string or object dataset is no weight
        raise ModelLoadError(f"weight dataset '{dataset.name}' has dtype {dataset.dtype}; "
                             "weights are numbers")
    return int(np.prod(dataset.shape, dtype=object)) * dataset.dtype.itemsize


# Filters compiled into HDF5 and h5py. Any other filter id makes HDF5 search its plugin path and load a
# shared library named by the file: code from outside the file, refused like a Lambda layer.
BUILTIN_FILTERS = {
    h5z.FILTER_DEFLATE: "deflate", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32",
    h5z.FILTER_SZIP: "szip", h5z.FILTER_NBIT: "nbit", h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5z.FILTER_LZF: "lzf",
}


def refuse_outside_storage(h5: h5py.File, path: Path) -> None:
    """Refuse every way an HDF5 file reaches outside itself: external links, virtual datasets,
    external raw storage (a dataset whose bytes are another file's, /etc/passwd say) and filters
    that HDF5 would load as plugins. Checked on each dataset's creation property list, before any
    dataset's data is read. Keras writes a tree: soft links and a group reached twice (a cycle) are
    refused too."""
    groups: dict[h5py.h5g.GroupID, str] = {h5["/"].id: "/"}

    def check(name: str, link: h5py.HLObject) -> str | None:
        # A value returned stops the visit; an exception raised in here would surface from h5py's
        # C callback as a SystemError, not as the refusal.
        if isinstance(link, h5py.ExternalLink):
            return (f"{path}: '{name}' is an HDF5 external link to {link.filename}; "
                    "model files must be self-contained")
        if isinstance(link, h5py.SoftLink):
            return f"{path}: '{name}' is an HDF5 soft link to '{_short(link.path)}'; Keras writes none"
        kind = h5.get(name, getclass=True)
        if kind is h5py.Group:
            first = groups.setdefault(h5[name].id, name)
            return None if first == name else (
                f"{path}: group '{name}' is a second link to group '{first}' (a cycle or a shared "
                "group); Keras writes a tree")
        return _storage_problem(path, name, h5[name]) if kind is h5py.Dataset else None
    problem = h5.visititems_links(check)
    if problem:
        raise UnsafeModelError(problem)


def _storage_problem(filename: Path, name: str, dataset: h5py.Dataset) -> str | None:
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


def _strings(values: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _short(value: Any, limit: int = 200) -> str:
    """A file's own text in a message, cut so a hostile file cannot flood the log."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
