"""A compiled Keras model's training loss as a pure JAX function of its trainable weights.

Every mechanism measured here (the gradient's noise, the Hessian's top eigenvalue)
differentiates this one function, so they all see the loss training minimises: Keras's own
`compute_loss_and_updates` (the JAX trainer's stateless loss, "intended for use with
jax.grad"), with the compiled loss (its `from_logits`, its reduction) and the layers'
regularisation penalties. It runs in inference mode, `training=False`: **dropout is off**
(and batch normalisation uses its moving statistics), so a measurement is a property of the
weights, not of one draw of dropout masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.flatten_util import ravel_pytree


@dataclass(frozen=True)
class TrainingLoss:
    """The training loss of a model at fixed weights.

    Attributes:
        function: `function(weights, x, y)`: the mean loss over the batch `x`, `y` (a JAX
            scalar), with `weights` a list shaped like `model.trainable_variables`.
        weights: copies of the model's trainable weights, as JAX arrays.
    """

    function: Callable[[list[Any], Any, Any], Any]
    weights: list[Any]

    @property
    def size(self) -> int:
        """The number of trainable weights."""
        return int(sum(np.prod(w.shape) for w in self.weights))


def training_loss(model: keras.Model) -> TrainingLoss:
    """The compiled model's training loss, dropout off, as a function of its trainable weights.

    Args:
        model: a built and compiled Keras model (JAX backend), e.g. from `build_model` and
            `compile_model`; its weights are copied, so training it later changes nothing here.

    Returns:
        A `TrainingLoss`.

    Raises:
        ValueError: the model is not compiled, or Keras runs on another backend than JAX.
    """
    if keras.backend.backend() != "jax":
        raise ValueError("the mechanisms differentiate with JAX: set KERAS_BACKEND=jax")
    if not model.compiled:
        raise ValueError("compile the model before measuring it, e.g. with compile_model")
    # Copies: Keras's `fit`, `evaluate` and `predict` donate (free) the variables' buffers.
    non_trainable = [jnp.array(v.value, copy=True) for v in model.non_trainable_variables]
    metrics = [jnp.array(v.value, copy=True) for v in model.metrics_variables]

    def function(weights, x, y):
        loss, _ = model.compute_loss_and_updates(
            weights, non_trainable, metrics, x, y, None, training=False
        )
        return loss

    weights = [jnp.array(v.value, copy=True) for v in model.trainable_variables]
    return TrainingLoss(function=function, weights=weights)


def flat_gradient(loss: TrainingLoss) -> Callable[[Any, Any, Any], Any]:
    """`g(weights, x, y)`: the gradient of the mean loss over the batch as one flat vector."""
    gradient = jax.grad(loss.function)

    def flat(weights, x, y):
        return ravel_pytree(gradient(weights, x, y))[0]

    return flat
