"""The "File I/O" chapter's PyTorch cells, through tensorfile.

Run from any folder: files are written to the current directory.
"""

import torch
from torch import nn
from torch.nn import functional as F

import tensorfile

# Loading and saving tensors
x = torch.arange(4)
tensorfile.save(x, "x-file")
x2 = tensorfile.load("x-file")
print("x2 =", x2)

y = torch.zeros(4)
tensorfile.save([x, y], "x-files")
x2, y2 = tensorfile.load("x-files")
print("(x2, y2) =", (x2, y2))

mydict = {"x": x, "y": y}
tensorfile.save(mydict, "mydict")
mydict2 = tensorfile.load("mydict")
print("mydict2 =", mydict2)


# Loading and saving model parameters
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.output = nn.Linear(256, 10)

    def forward(self, x):
        return self.output(F.relu(self.hidden(x)))


net = MLP()
X = torch.randn(size=(2, 20))
Y = net(X)

tensorfile.save(net.state_dict(), "mlp.params")

clone = MLP()
clone.load_state_dict(tensorfile.load("mlp.params"))
clone.eval()

Y_clone = clone(X)
print("Y_clone == Y:\n", Y_clone == Y)
assert bool((Y_clone == Y).all())
