"""The "File I/O" chapter's TensorFlow cells, through tensorfile.

The chapter itself goes through ``np.save`` (which stacks the list into one array
and pickles the dict) and ``save_weights`` (which Keras 3 refuses for the name
``mlp.params``); tensorfile keeps the structure and takes any name.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import tensorfile  # noqa: E402

# Loading and saving tensors
x = tf.range(4)
tensorfile.save(x, "x-file")
x2 = tensorfile.load("x-file")
print("x2 =", x2)

y = tf.zeros(4)
tensorfile.save([x, y], "x-files")
x2, y2 = tensorfile.load("x-files")
print("(x2, y2) =", (x2, y2))

mydict = {"x": x, "y": y}
tensorfile.save(mydict, "mydict")
mydict2 = tensorfile.load("mydict")
print("mydict2 =", mydict2)


# Loading and saving model parameters
class MLP(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten = tf.keras.layers.Flatten()
        self.hidden = tf.keras.layers.Dense(units=256, activation=tf.nn.relu)
        self.out = tf.keras.layers.Dense(units=10)

    def call(self, inputs):
        x = self.flatten(inputs)
        x = self.hidden(x)
        return self.out(x)


net = MLP()
X = tf.random.uniform((2, 20))
Y = net(X)

tensorfile.save_parameters(net, "mlp.params")

clone = MLP()
clone(X)  # Keras builds its variables on the first call
tensorfile.load_parameters(clone, "mlp.params")

Y_clone = clone(X)
print("Y_clone == Y:\n", Y_clone == Y)
assert bool(tf.reduce_all(Y_clone == Y))
