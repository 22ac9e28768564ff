"""The "File I/O" chapter's cells in JAX, through tensorfile.

The MLP is plain JAX: its parameters are a dict of arrays (a pytree), which
``save_parameters`` stores under dotted names and ``load_parameters`` fills in place.
"""

import jax
import jax.numpy as jnp

import tensorfile

# Loading and saving tensors
x = jnp.arange(4)
tensorfile.save(x, "x-file")
x2 = tensorfile.load("x-file")
print("x2 =", x2)

y = jnp.zeros(4)
tensorfile.save([x, y], "x-files")
x2, y2 = tensorfile.load("x-files")
print("(x2, y2) =", (x2, y2))

mydict = {"x": x, "y": y}
tensorfile.save(mydict, "mydict")
mydict2 = tensorfile.load("mydict")
print("mydict2 =", mydict2)


# Loading and saving model parameters
def init_mlp(key):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"kernel": jax.random.normal(k1, (20, 256)) * 0.1, "bias": jnp.zeros(256)},
        "out": {"kernel": jax.random.normal(k2, (256, 10)) * 0.1, "bias": jnp.zeros(10)},
    }


def mlp(params, x):
    h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"]


params = init_mlp(jax.random.PRNGKey(0))
X = jax.random.uniform(jax.random.PRNGKey(1), (2, 20))
Y = mlp(params, X)

tensorfile.save_parameters(params, "mlp.params")

clone = init_mlp(jax.random.PRNGKey(42))  # different values, same structure
tensorfile.load_parameters(clone, "mlp.params")

Y_clone = mlp(clone, X)
print("Y_clone == Y:\n", Y_clone == Y)
assert bool((Y_clone == Y).all())
