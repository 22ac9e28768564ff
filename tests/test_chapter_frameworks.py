"""The chapter's tensor cells in TensorFlow and JAX: structure, type and dtype come back."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tensorfile

tf = pytest.importorskip("tensorflow")
jax = pytest.importorskip("jax")
jnp = jax.numpy


def test_tensorflow_cells(tmp_path):
    os.chdir(tmp_path)
    x = tf.range(4)
    tensorfile.save(x, "x-file")
    x2 = tensorfile.load("x-file")
    assert isinstance(x2, tf.Tensor) and x2.dtype == tf.int32 and x2.numpy().tolist() == [0, 1, 2, 3]
    y = tf.zeros(4)
    tensorfile.save([x, y], "x-files")
    x2, y2 = tensorfile.load("x-files")  # np.save would have stacked them into one array
    assert x2.dtype == tf.int32 and y2.dtype == tf.float32
    tensorfile.save({"x": x, "y": y}, "mydict")  # np.save would have pickled it
    mydict2 = tensorfile.load("mydict")
    assert list(mydict2) == ["x", "y"] and mydict2["y"].numpy().tolist() == [0.0] * 4
    v = tf.Variable([1.0, 2.0], trainable=False)
    tensorfile.save({"v": v}, "var")
    back = tensorfile.load("var")["v"]
    assert isinstance(back, tf.Variable) and not back.trainable and back.numpy().tolist() == [1.0, 2.0]


def test_jax_cells_keep_64_bit(tmp_path):
    os.chdir(tmp_path)
    x = jnp.arange(4)
    tensorfile.save(x, "x-file")
    x2 = tensorfile.load("x-file")
    assert isinstance(x2, jax.Array) and x2.dtype == jnp.int32 and x2.tolist() == [0, 1, 2, 3]
    tensorfile.save([x, jnp.zeros(4)], "x-files")
    x2, y2 = tensorfile.load("x-files")
    assert y2.dtype == jnp.float32
    tensorfile.save({"d": np.arange(3.0)}, "f64")
    back = tensorfile.load("f64", framework="jax")["d"]
    assert back.dtype == np.float64 and back.tolist() == [0.0, 1.0, 2.0]  # though jax_enable_x64 is off
    cpu = jax.devices("cpu")[0]
    assert tensorfile.load("f64", framework="jax", device="cpu:0")["d"].devices() == {cpu}


def test_keras_variables_of_every_backend_dtype(tmp_path):
    keras = pytest.importorskip("keras")
    layer = keras.layers.Dense(3, dtype="bfloat16")
    layer.build((None, 2))
    tensorfile.save_parameters(layer, tmp_path / "bf")
    back = tensorfile.load(tmp_path / "bf", framework="numpy")
    assert back["kernel"].dtype.name == "bfloat16" and back["kernel"].shape == (2, 3)
