"""The chapter's Gluon MLP, shared by the MXNet tests and the exchange script (runs in .venv-mxnet)."""

from mxnet.gluon import nn


class MLP(nn.Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = nn.Dense(256, activation="relu")
        self.output = nn.Dense(10)

    def forward(self, x):
        return self.output(self.hidden(x))
