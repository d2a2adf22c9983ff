"""Model files an attacker would write: each a small real Keras file, then edited with h5py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np

SECRET = b"root:x:0:0:secret-line-of-a-local-file\n"


def dense(path: Path) -> Path:
    """A Dense(4) on 3 features: weights at model_weights/dense/sequential/dense/{kernel,bias}."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense")],
                             name="sequential")  # fixed names: the paths below
    model.save(path)
    return path


def _replace_dataset(path: Path, name: str, **create) -> None:
    with h5py.File(path, "a") as h5:
        group, leaf = h5[name].parent, name.rsplit("/", 1)[-1]
        shape, dtype = h5[name].shape, h5[name].dtype
        del group[leaf]
        group.create_dataset(leaf, shape=create.pop("shape", shape), dtype=create.pop("dtype", dtype),
                             **create)


BIAS = "model_weights/dense/sequential/dense/bias"
KERNEL = "model_weights/dense/sequential/dense/kernel"


def external_storage(path: Path, secret: Path) -> Path:
    """The exploit: a zero kernel and a bias whose bytes are another local file's, so every answer
    is that file's bytes read as float32."""
    secret.write_bytes(SECRET)
    dense(path)
    with h5py.File(path, "a") as h5:
        h5[KERNEL][...] = np.zeros(h5[KERNEL].shape, np.float32)
    _replace_dataset(path, BIAS, external=[(str(secret), 0, 16)])
    return path


def plugin_filter(path: Path) -> Path:
    """A kernel compressed with a filter id HDF5 would look for as a plugin (a shared library).
    Written with raw storage flags through the low-level API: no such plugin exists here to write it."""
    dense(path)
    with h5py.File(path, "a") as h5:
        kernel = h5[KERNEL][()]
        group = h5[KERNEL].parent
        del group["kernel"]
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_chunk(kernel.shape)
        # Optional filter: HDF5 writes the data unfiltered when it cannot find the plugin, but a
        # reader must still resolve filter 32013 (a real registered id) before reading.
        plist.set_filter(32013, h5py.h5z.FLAG_OPTIONAL, ())
        space = h5py.h5s.create_simple(kernel.shape)
        dataset = h5py.h5d.create(group.id, b"kernel", h5py.h5t.IEEE_F32LE, space, dcpl=plist)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, kernel)
    return path


def with_attribute(path: Path, name: str, text: str) -> Path:
    """A good Dense file whose root attribute `name` (model_config, lstmserve_metadata) is `text`."""
    dense(path)
    with h5py.File(path, "a") as h5:
        h5.attrs[name] = text
    return path


def deep_config(path: Path, levels: int = 100_000) -> Path:
    """A model_config nested `levels` deep (objects within objects): the parser's recursion."""
    nested = '{"a": ' * levels + "1" + "}" * levels
    return with_attribute(path, "model_config", '{"class_name": "Sequential", "config": ' + nested + "}")


def declared_weight(path: Path, shape: tuple[int, ...], dtype: str = "float32") -> Path:
    """The kernel replaced by a chunked, compressed dataset declaring `shape` (a few bytes in the file:
    every chunk is the fill value, never written)."""
    dense(path)
    chunk = tuple(min(dim, 1024) for dim in shape)
    _replace_dataset(path, KERNEL, shape=shape, dtype=dtype, chunks=chunk, compression="gzip")
    return path


def huge_units(path: Path) -> Path:
    """A Dense declaring two billion units (24 GB of kernel Keras would allocate and initialise)."""
    dense(path)
    with h5py.File(path, "a") as h5:
        config = json.loads(h5.attrs["model_config"])
        config["config"]["layers"][1]["config"]["units"] = 2_000_000_000
        h5.attrs["model_config"] = json.dumps(config)
    return path


def huge_config(path: Path, megabytes: int = 20) -> Path:
    """A valid config carrying `megabytes` of padding: a huge attribute."""
    dense(path)
    with h5py.File(path, "a") as h5:
        config = json.loads(h5.attrs["model_config"])
        config["padding"] = "x" * (megabytes << 20)
        h5.attrs["model_config"] = json.dumps(config)
    return path


def huge_name_list(path: Path, megabytes: int = 20) -> Path:
    """model_weights lists a layer name of `megabytes` (variable-length strings live outside the
    attribute's header, so HDF5 stores any size)."""
    dense(path)
    with h5py.File(path, "a") as h5:
        h5["model_weights"].attrs["layer_names"] = np.array(["dense", "x" * (megabytes << 20)],
                                                           dtype=h5py.string_dtype())
    return path


def non_finite_weights(path: Path, value: float) -> Path:
    dense(path)
    with h5py.File(path, "a") as h5:
        bias = h5[BIAS][()]
        bias[1] = value
        h5[BIAS][...] = bias
    return path


def hard_link_cycle(path: Path) -> Path:
    """A group holding a hard link to its own ancestor: the tree becomes a cycle."""
    dense(path)
    with h5py.File(path, "a") as h5:
        h5["model_weights/dense/sequential"]["loop"] = h5["model_weights"]
    return path


def soft_link(path: Path) -> Path:
    dense(path)
    with h5py.File(path, "a") as h5:
        h5["model_weights/dense"]["again"] = h5py.SoftLink("/model_weights/dense")
    return path


def text_weights(path: Path) -> Path:
    """The kernel stored as strings of the right shape."""
    dense(path)
    _replace_dataset(path, KERNEL, dtype=h5py.string_dtype())
    return path


def compound_weights(path: Path) -> Path:
    dense(path)
    _replace_dataset(path, KERNEL, dtype=np.dtype([("re", "f4"), ("im", "f4")]))
    return path


def missing_weight_group(path: Path) -> Path:
    dense(path)
    with h5py.File(path, "a") as h5:
        del h5["model_weights/dense"]
    return path


def missing_weight_dataset(path: Path) -> Path:
    dense(path)
    with h5py.File(path, "a") as h5:
        del h5[BIAS]
    return path

