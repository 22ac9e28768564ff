"""The chapter's models in each framework, shared by the tests and examples."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def torch_mlp():
    from torch import nn
    from torch.nn import functional as F

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(20, 256)
            self.output = nn.Linear(256, 10)

        def forward(self, x):
            return self.output(F.relu(self.hidden(x)))

    return MLP()


def keras_mlp(build: bool = True):
    import keras
    import numpy as np

    class MLP(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(units=256, activation="relu")
            self.out = keras.layers.Dense(units=10)

        def call(self, inputs):
            return self.out(self.hidden(self.flatten(inputs)))

    model = MLP()
    if build:
        model(np.zeros((1, 20), np.float32))
    return model
