"""Model files an attacker would write: each a small real Keras file, then edited with h5py."""

from __future__ import annotations

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
