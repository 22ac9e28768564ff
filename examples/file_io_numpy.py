"""The "File I/O" chapter's cells in plain NumPy, through tensorfile.

``np.save`` would stack the list into one array and pickle the dict; tensorfile
keeps a list a list and a dict a dict, and never pickles.
"""

import numpy as np

import tensorfile

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


# Loading and saving model parameters: the chapter's MLP, written with NumPy
class MLP:
    def __init__(self, rng=None):
        rng = rng or np.random.default_rng()
        bound_h, bound_o = 1 / np.sqrt(20), 1 / np.sqrt(256)
        self.params = {
            "hidden.weight": rng.uniform(-bound_h, bound_h, (256, 20)).astype(np.float32),
            "hidden.bias": rng.uniform(-bound_h, bound_h, 256).astype(np.float32),
            "output.weight": rng.uniform(-bound_o, bound_o, (10, 256)).astype(np.float32),
            "output.bias": rng.uniform(-bound_o, bound_o, 10).astype(np.float32),
        }

    def __call__(self, X):
        p = self.params
        H = np.maximum(X @ p["hidden.weight"].T + p["hidden.bias"], 0)
        return H @ p["output.weight"].T + p["output.bias"]


net = MLP()
X = np.random.default_rng().standard_normal((2, 20)).astype(np.float32)
Y = net(X)

tensorfile.save(net.params, "mlp.params")

clone = MLP()
clone.params = tensorfile.load("mlp.params")

Y_clone = clone(X)
print("Y_clone == Y:\n", Y_clone == Y)
assert (Y_clone == Y).all()
