"""The "File I/O" chapter's MXNet cells, through tensorfile (run with the .venv-mxnet Python).

``npx.load`` returns one saved array as a one-element list; tensorfile returns the array.
"""

from mxnet import np, npx
from mxnet.gluon import nn

import tensorfile

npx.set_np()

# Loading and saving tensors
x = np.arange(4)
tensorfile.save(x, "x-file")
x2 = tensorfile.load("x-file")
print("x2 =", x2)

y = np.zeros(4)
tensorfile.save([x, y], "x-files")
x2, y2 = tensorfile.load("x-files")
print("(x2, y2) =", (x2, y2))

mydict = {"x": x, "y": y}
tensorfile.save(mydict, "mydict")
mydict2 = tensorfile.load("mydict")
print("mydict2 =", mydict2)


# Loading and saving model parameters
class MLP(nn.Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = nn.Dense(256, activation="relu")
        self.output = nn.Dense(10)

    def forward(self, x):
        return self.output(self.hidden(x))


net = MLP()
net.initialize()
X = np.random.uniform(size=(2, 20))
Y = net(X)

tensorfile.save_parameters(net, "mlp.params")

clone = MLP()
tensorfile.load_parameters(clone, "mlp.params")

Y_clone = clone(X)
print("Y_clone == Y:\n", Y_clone == Y)
assert bool((Y_clone == Y).all())
