"""Exercise 2 of the chapter: reuse the first two layers of a trained network in a new one.

The new network has another architecture (a different head, layers renamed into an
encoder). `select` picks the layers to reuse, `rename` maps their names, and the report
says what was loaded and what the new network still has to learn. Shown in PyTorch and
in Keras.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensorfile  # noqa: E402


# ---------------------------------------------------------------- PyTorch
class TorchTrained(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden1 = nn.Linear(20, 64)
        self.hidden2 = nn.Linear(64, 64)
        self.output = nn.Linear(64, 10)

    def forward(self, x):
        return self.output(torch.relu(self.hidden2(torch.relu(self.hidden1(x)))))


class TorchTransfer(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 3)  # a new task: 3 classes

    def forward(self, x):
        return self.head(self.encoder(x))


# ---------------------------------------------------------------- Keras
class KerasTrained(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden1 = keras.layers.Dense(64, activation="relu")
        self.hidden2 = keras.layers.Dense(64, activation="relu")
        self.out = keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.hidden2(self.hidden1(x)))


class KerasTransfer(keras.Model):
    def __init__(self):
        super().__init__()
        self.encoder = [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64, activation="relu")]
        self.head = keras.layers.Dense(3)

    def call(self, x):
        for layer in self.encoder:
            x = layer(x)
        return self.head(x)


def train_torch(net: nn.Module, steps: int = 50) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        X = torch.randn(32, 20, generator=g)
        loss = nn.functional.cross_entropy(net(X), (X[:, 0] > 0).long())
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    folder = tempfile.mkdtemp(prefix="tensorfile-reuse-")
    torch.manual_seed(0)
    trained = TorchTrained()
    train_torch(trained)
    tensorfile.save_parameters(trained, os.path.join(folder, "torch.params"))

    new = TorchTransfer()
    report = tensorfile.load_parameters(
        new,
        os.path.join(folder, "torch.params"),
        select=["hidden1", "hidden2"],
        rename={"hidden1.": "encoder.0.", "hidden2.": "encoder.2."},
        strict=False,
    )
    print("PyTorch:", report)
    print("  loaded:", report.loaded)
    print("  still to learn:", report.missing_keys)
    assert torch.equal(new.encoder[0].weight, trained.hidden1.weight)
    assert torch.equal(new.encoder[2].bias, trained.hidden2.bias)

    X = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    k_trained = KerasTrained()
    k_trained(X)
    tensorfile.save_parameters(k_trained, os.path.join(folder, "keras.params"))
    k_new = KerasTransfer()
    k_new(X)
    report = tensorfile.load_parameters(
        k_new,
        os.path.join(folder, "keras.params"),
        select="hidden*",
        rename={"hidden1.": "encoder.0.", "hidden2.": "encoder.1."},
        strict=False,
    )
    print("Keras:", report)
    print("  loaded:", report.loaded)
    print("  still to learn:", report.missing_keys)
    assert np.array_equal(np.asarray(k_new.encoder[1].kernel), np.asarray(k_trained.hidden2.kernel))

    # The PyTorch layers work in the Keras transfer network too: layouts are converted.
    k_from_torch = KerasTransfer()
    k_from_torch(X)
    report = tensorfile.load_parameters(
        k_from_torch,
        os.path.join(folder, "torch.params"),
        select=["hidden1", "hidden2"],
        rename={"hidden1.": "encoder.0.", "hidden2.": "encoder.1."},
        strict=False,
    )
    print("PyTorch layers into Keras:", report)
    encoded_torch = new.encoder(torch.from_numpy(X)).detach().numpy()
    encoded_keras = np.asarray(k_from_torch.encoder[1](k_from_torch.encoder[0](X)))
    print("  encoder outputs agree:", bool(np.allclose(encoded_torch, encoded_keras, rtol=1e-5, atol=1e-6)))
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    main()
