"""Small numpy networks: a tanh MLP with hand-written backprop, and Adam.

A network's parameters live in one flat float64 vector (weights and biases are views into
it), so ES perturbs it, Adam updates it and checkpoints copy it as one array.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["MLP", "Adam", "flat_size"]


def flat_size(sizes: list[int]) -> int:
    """Number of parameters of an MLP with layer widths ``sizes`` (input first)."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


class MLP:
    """``sizes[0] -> ... -> sizes[-1]``: tanh hidden layers, a linear output layer.

    Args:
        sizes: layer widths, input first, output last (at least two).
        flat: the parameter vector to use (a view into a bigger one is fine); None: own one.
        rng: initialises the weights when given (scaled normal; the output layer times
            ``out_scale``); None leaves ``flat`` as it is.
        out_scale: scale of the output layer's initial weights (0.01 for policy logits).
    """

    def __init__(
        self,
        sizes: list[int],
        flat: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        out_scale: float = 1.0,
    ) -> None:
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output width, got {sizes}")
        self.sizes = list(sizes)
        n = flat_size(self.sizes)
        self.flat = np.zeros(n) if flat is None else flat
        if self.flat.shape != (n,):
            raise ValueError(
                f"MLP {sizes} has {n} parameters; the vector given has {self.flat.shape}"
            )
        self.W: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        i = 0
        for a, b in itertools.pairwise(self.sizes):
            self.W.append(self.flat[i : i + a * b].reshape(a, b))
            i += a * b
            self.b.append(self.flat[i : i + b])
            i += b
        if rng is not None:
            last = len(self.W) - 1
            for k, w in enumerate(self.W):
                scale = np.sqrt(1.0 / w.shape[0]) * (out_scale if k == last else 1.0)
                w[...] = rng.standard_normal(w.shape) * scale
                self.b[k][...] = 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output for a batch ``x`` of shape ``(n, sizes[0])``."""
        h = x
        last = len(self.W) - 1
        for k, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            h = h @ w + b
            if k != last:
                h = np.tanh(h)
        return h

    def forward_cached(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The output and the activations ``backward`` needs."""
        acts = [x]
        h = x
        last = len(self.W) - 1
        for k, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            h = h @ w + b
            if k != last:
                h = np.tanh(h)
            acts.append(h)
        return h, acts

    def backward(
        self, acts: list[np.ndarray], dout: np.ndarray, grad: np.ndarray | None = None
    ) -> np.ndarray:
        """Gradient of a loss with respect to the parameters, given dloss/doutput.

        Args:
            acts: the activations from ``forward_cached``.
            dout: dloss/doutput, shape ``(n, sizes[-1])``.
            grad: a flat vector of the parameters' size to write into (None: a new one).

        Returns:
            The flat gradient (same layout as ``flat``).
        """
        g = np.zeros_like(self.flat) if grad is None else grad
        gw, gb, i = [], [], 0
        for a, b in itertools.pairwise(self.sizes):
            gw.append(g[i : i + a * b].reshape(a, b))
            i += a * b
            gb.append(g[i : i + b])
            i += b
        d = dout
        for k in range(len(self.W) - 1, -1, -1):
            gw[k][...] = acts[k].T @ d
            gb[k][...] = d.sum(axis=0)
            if k:
                d = (d @ self.W[k].T) * (1.0 - acts[k] ** 2)  # through tanh
        return g


class Adam:
    """Adam on a flat parameter vector (in place).

    Args:
        size: number of parameters.
        lr: step size; beta1, beta2, eps: Adam's constants.
    """

    def __init__(
        self,
        size: int,
        lr: float = 3e-4,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.t = 0

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float | None = None) -> None:
        """``params -= lr * m_hat / (sqrt(v_hat) + eps)`` for the gradient ``grad``."""
        self.t += 1
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * grad * grad
        a = (
            (self.lr if lr is None else lr)
            * np.sqrt(1 - self.beta2**self.t)
            / (1 - self.beta1**self.t)
        )
        params -= a * self.m / (np.sqrt(self.v) + self.eps)

    def state(self) -> dict[str, Any]:
        """A copy of the optimizer's state (for checkpoints)."""
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "m": self.m.copy(),
            "v": self.v.copy(),
            "t": self.t,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state()``."""
        self.lr, self.beta1, self.beta2 = state["lr"], state["beta1"], state["beta2"]
        self.eps, self.t = state["eps"], state["t"]
        self.m, self.v = state["m"].copy(), state["v"].copy()
