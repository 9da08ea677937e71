"""`model.fit` for the JAX backend, with many training steps compiled as one XLA program.

`model.fit` returns to Python after every batch (or every `steps_per_execution` batches) to
fetch the next one and dispatch the step; at batch 32 on a CPU that dispatch costs as much
as the arithmetic. Here the training data lives on the device, and a whole epoch (or a chunk
of it, for a live progress bar and a prompt Ctrl-C) is one `lax.fori_loop` of Keras's own
stateless `model.train_step`, as in Keras's guide "Writing a training loop from scratch in
JAX" (https://keras.io/guides/writing_a_custom_training_loop_in_jax/). Reusing `train_step`
keeps Keras's semantics exactly: the compiled loss, regularisation losses, metrics (the
loss is a mean weighted by batch size, as in `fit`), the optimizer with its learning-rate
schedule, and the dropout seed generators, whose state is a non-trainable variable that
`stateless_call` returns updated.

A convolutional net is the exception: XLA's CPU backend runs a convolution inside a while
loop ~30× slower than outside one, so its programs unroll `UNROLLED_STEPS` steps each
instead (about twice as fast as `model.fit` on the `cnn` preset; benchmarks/RESULTS.md,
"Convolutions in a compiled loop").

What differs from `model.fit`:
- the shuffle of epoch `e` is drawn from `(seed, e)`, so the same seed gives the same weights
  and a resumed run sees the same order an uninterrupted one would;
- batch-level callbacks are called once per chunk, as `fit` does with `steps_per_execution`;
- validation runs in batches of `VALIDATION_BATCH_SIZE` (the mean loss and the metrics don't
  depend on the batch size; only float rounding does).

The learned state is written back into the Keras variables after every epoch, when the
training stops, and on an exception (Ctrl-C included) before it propagates, so
`model.save`, `model.evaluate` and `model.predict` behave as after `model.fit`.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from digitlab import interrupts

VALIDATION_BATCH_SIZE = 500  # small enough for a conv net's activations, large enough to be fast
LIVE_CHUNK_SECONDS = 0.25  # a live progress bar's update interval (verbose=1)
CHUNK_SECONDS = 2.0  # otherwise: how long a Ctrl-C may wait for the running chunk to finish
FIRST_CHUNK_STEPS = 64  # steps run before the step time is known
# Convolutional nets: steps per compiled program, unrolled rather than in a while loop
# (see `_Trainer`; benchmarks/RESULTS.md, "Convolutions in a compiled loop").
UNROLLED_STEPS = 8


@functools.cache
def _configure_jax() -> None:
    """Once per process: a compilation cache on disk, and JAX's unrolled RNG on the CPU.

    Compiling an epoch takes a second or two; the cache (`$XDG_CACHE_HOME/digitlab/xla`,
    unless JAX's own `JAX_COMPILATION_CACHE_DIR` is set; `DIGITLAB_XLA_CACHE=0` turns it off)
    makes the next run of the same network start at once. Every program is cached, however
    quick to compile: a run compiles some twenty small ones too (the weights' initialisers
    in `build_model`, evaluation, prediction), 1 s in all against 0.1 s to read them back.
    It runs when this module is imported, so that it comes before `build_model` compiles.

    On the CPU, JAX lowers the threefry RNG behind every dropout mask as a rolled loop: a
    nested XLA while loop of five iterations per draw, inside every training step. The
    unrolled form that JAX uses on GPUs computes the same bits (dropout masks are unchanged)
    with one fused kernel; it saves 10–20% of an epoch of the notebook's network.
    """
    import jax

    if (
        os.environ.get("DIGITLAB_XLA_CACHE", "1") != "0"
        and not jax.config.jax_compilation_cache_dir
    ):
        from digitlab.data import cache_dir

        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:  # private JAX API: if it moves, the rolled loop is merely slower
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32

        mlir.register_lowering(
            threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule, platform="cpu"
        )
    except (ImportError, AttributeError):
        pass


_configure_jax()  # before anything compiles: `build_model`'s initialisers come first


class StopOnRequest(keras.callbacks.Callback):
    """Raise KeyboardInterrupt after the batch (or compiled chunk) during which a stop came.

    Args:
        stop: the event to watch; default `interrupts.requested` (Ctrl-C or SIGTERM).
    """

    def __init__(self, stop: threading.Event = interrupts.requested):
        super().__init__()
        self._stop = stop

    def on_train_batch_end(self, batch, logs=None):
        if self._stop.is_set():
            raise KeyboardInterrupt


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 32,
    epochs: int = 1,
    initial_epoch: int = 0,
    validation_split: float = 0.0,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 2,
    seed: int = 0,
    input_scale: float | None = None,
) -> dict[str, list[float]]:
    """Train a compiled model like `model.fit(x, y, ...)`, an epoch per compiled program.

    Args:
        model: a compiled Keras model (any loss, optimizer and metrics `compile` accepts).
        x: the training inputs, e.g. float32 N×784; kept on the device for the whole fit.
        y: the targets: integer labels, or one-hot rows for a one-hot loss.
        batch_size: samples per gradient step (default 32); a last partial batch is kept,
            as `fit` keeps it.
        epochs: the epoch to stop after (default 1), counted from 0 like `fit`'s.
        initial_epoch: the first epoch to run (default 0), to continue an earlier fit.
        validation_split: the fraction of `x`, `y` taken from the end (before shuffling, as
            `fit` does) to evaluate after every epoch; logs gain `val_` keys (default 0.0).
        validation_data: (inputs, targets) to evaluate on instead of a split, as `fit`'s.
        callbacks: Keras callbacks; `on_epoch_*` and `on_train_*` are called as by `fit`,
            `on_train_batch_*` once per compiled chunk of steps; `model.stop_training` works.
        verbose: 0 silent, 1 a live progress bar, 2 one line per epoch (default), as `fit`.
        seed: draws each epoch's shuffle (default 0).
            Dropout draws from the layers' own seed generators, seeded when the model was
            built (`keras.utils.set_random_seed`).
        input_scale: if given, `x` is kept as it is (e.g. uint8 pixels, a quarter of the
            memory of float32) and each batch becomes `float32(x) * float32(input_scale)`
            inside the step: the same values `prepare_inputs` computes (default None).

    Returns:
        The per-epoch logs, `{"loss": [...], "accuracy": [...], "val_loss": [...], ...}`,
        the same as `model.fit(...).history`.

    Raises:
        ValueError: the model is not compiled, or the split leaves no training data.
        KeyboardInterrupt: re-raised after the weights learned so far are in the model.
    """
    if keras.backend.backend() != "jax":  # the compiled loop is JAX's; other backends: `fit`
        x = _scaled(x, input_scale)
        return model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            initial_epoch=initial_epoch,
            validation_split=validation_split,
            validation_data=None
            if validation_data is None
            else (_scaled(validation_data[0], input_scale), validation_data[1]),
            callbacks=list(callbacks),
            verbose=verbose,
        ).history
    if not model.compiled:
        raise ValueError("compile the model before fitting it, e.g. with compile_model")
    _configure_jax()
    if validation_data is None:
        x_train, y_train, validation = split(x, y, validation_split)
    else:
        x_train, y_train, validation = x, y, validation_data
    trainer = _Trainer(model, x_train, y_train, batch_size, seed, input_scale, validation)
    history = keras.callbacks.History()  # last, as `fit` adds it
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=trainer.steps_per_epoch,
        model=model,
    )
    chunk_seconds = LIVE_CHUNK_SECONDS if verbose == 1 else CHUNK_SECONDS
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = trainer.train_epoch(epoch, callback_list, chunk_seconds)
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in trainer.validate().items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    _finalize_weights(model)
    callback_list.on_train_end(logs)
    return history.history


def _finalize_weights(model: keras.Model) -> None:
    """The optimizer's last word on the weights, as after `fit`: with `use_ema`, the moving
    averages. Keras assigns the averages' own buffers to the weights, and a later
    `model.evaluate` or `predict` donates (frees) the weights' buffers: the optimizer's
    averages would go with them, and saving the model fail. The weights get copies."""
    import jax

    model.optimizer.finalize_variable_values(model.trainable_weights)
    if getattr(model.optimizer, "use_ema", False):
        for variable in model.trainable_weights:
            variable.assign(jax.numpy.array(variable.value, copy=True))


def _has_convolutions(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)


def _loop(step, start, stop, count, state):
    """`step(i, state)` for i from `start`: to `stop` in an XLA while loop, or, when `count`
    is given, `count` times unrolled in the program (no loop for XLA to run slowly)."""
    import jax

    if count is None:
        return jax.lax.fori_loop(start, stop, step, state)
    for i in range(count):
        state = step(start + i, state)
    return state


def _scaled(x: np.ndarray, input_scale: float | None) -> np.ndarray:
    return x if input_scale is None else x.astype(np.float32) * np.float32(input_scale)


def split(x, y, validation_split: float):
    """The training part and the validation part, split as `fit` splits: the last fraction."""
    if not validation_split:
        return x, y, None
    split_at = int(np.floor(len(x) * (1.0 - validation_split)))
    if split_at in (0, len(x)):
        raise ValueError(
            f"validation_split={validation_split} leaves no training or no validation "
            f"samples out of {len(x)}"
        )
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])


def _index_batches(indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices as full batches (steps × batch_size) and the remainder, which may be empty."""
    full = len(indices) // batch_size * batch_size
    return indices[:full].reshape(-1, batch_size), indices[full:].reshape(1, -1)


class _Trainer:
    """The compiled training and evaluation programs of one model, and its state between them.

    The state is Keras's JAX training state: lists of the trainable, non-trainable,
    optimizer and metrics variables' values, in the order of the model's own lists.
    """

    def __init__(self, model, x, y, batch_size, seed, scale=None, validation=None):
        import jax

        self.model = model
        self.batch_size = batch_size
        self.seed = seed
        self.count = len(x)
        if self.count == 0:
            raise ValueError("no training samples")
        # Create the compiled metrics' and the optimizer's variables, as `fit` does first.
        self.scale = None if scale is None else np.float32(scale)
        model._symbolic_build(data_batch=(self._inputs(x[:batch_size]), y[:batch_size]))
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.validation = None if validation is None else jax.device_put(validation)
        self.steps_per_epoch = -(-self.count // batch_size)
        self._steps_per_second: float | None = None
        # No convolution in an XLA while loop on the CPU (the module's docstring;
        # https://github.com/jax-ml/jax/issues/12868): programs of unrolled steps instead.
        self.unrolled = jax.default_backend() == "cpu" and _has_convolutions(model)
        self._train = jax.jit(self._train_steps, static_argnames="count")
        self._test = jax.jit(self._test_steps, static_argnames="count")

    # The compiled programs -------------------------------------------------------------

    def _train_steps(self, state, x, y, order, start, stop, count=None):
        """Run training steps `start` to `stop` (rows of `order`, each a batch's indices), or,
        if `count` is given, the `count` steps from `start`, unrolled."""

        def step(i, state):
            _, state = self.model.train_step(state, (self._inputs(x[order[i]]), y[order[i]]))
            return state

        state = _loop(step, start, stop, count, state)
        return state, self._metrics_result(state[3])

    def _test_steps(self, state, x, y, order, count=None):
        """Evaluate on the batches in the rows of `order` (all of them: `count` unrolls)."""

        def step(i, state):
            _, state = self.model.test_step(state, (self._inputs(x[order[i]]), y[order[i]]))
            return state

        state = _loop(step, 0, order.shape[0], count, state)
        return state, self._metrics_result(state[2])

    def _inputs(self, x):
        """A batch as the model sees it: scaled to float32 here if `input_scale` was given."""
        return x if self.scale is None else x.astype(np.float32) * self.scale

    def _metrics_result(self, metrics_values):
        """The model's metrics (loss first), as `fit` logs them, from their traced values."""
        mapping = list(zip(self.model.metrics_variables, metrics_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return self.model.get_metrics_result()

    # Moving the state between the Keras variables and the programs ---------------------

    def _variable_groups(self):
        model = self.model
        return (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )

    def read_state(self):
        return tuple([v.value for v in group] for group in self._variable_groups())

    def write_state(self, state) -> None:
        for group, values in zip(self._variable_groups(), state, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)

    # One epoch -------------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This epoch's shuffle, drawn from the seed and the epoch alone."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.count).astype(np.int32)

    def _chunk_steps(self, chunk_seconds: float) -> int:
        if self.unrolled:
            return UNROLLED_STEPS
        if self._steps_per_second is None:
            return FIRST_CHUNK_STEPS
        return max(1, int(self._steps_per_second * chunk_seconds))

    def _run_steps(self, state, order, start: int, stop: int):
        """Training steps `start` to `stop` of this epoch's `order`: one program, or for a
        convolutional net programs of `UNROLLED_STEPS` (and of one step for what is left)."""
        if not self.unrolled:
            return self._train(state, self.x, self.y, order, start, stop)
        while start < stop:
            count = UNROLLED_STEPS if stop - start >= UNROLLED_STEPS else 1
            end = start + count  # (`count` decides; `stop` is not used by an unrolled program)
            state, logs = self._train(state, self.x, self.y, order, start, end, count=count)
            start = end
        return state, logs

    def train_epoch(self, epoch: int, callbacks, chunk_seconds: float) -> dict[str, float]:
        """Train one epoch in chunks; returns its logs. The model holds the state after it."""
        import jax

        full, rest = _index_batches(self._epoch_order(epoch), self.batch_size)
        full, rest = jax.device_put(full), jax.device_put(rest)
        state = self.read_state()
        steps = len(full) + (rest.size > 0)
        logs: dict[str, Any] = {}
        done = 0
        try:
            while done < steps and not self.model.stop_training:
                callbacks.on_train_batch_begin(done)
                started = time.perf_counter()
                if done < len(full):
                    stop = min(len(full), done + self._chunk_steps(chunk_seconds))
                    state, logs = self._run_steps(state, full, done, stop)
                else:  # the last, partial batch: its own (small) compiled program
                    stop = done + 1
                    state, logs = self._run_steps(state, rest, 0, 1)
                logs = {name: float(value) for name, value in logs.items()}
                if done > 0 and stop - done > 1:  # the first chunk includes the compile
                    self._steps_per_second = (stop - done) / (time.perf_counter() - started)
                done = stop
                callbacks.on_train_batch_end(done - 1, logs)
        finally:  # Ctrl-C included: keep what was learned
            self.write_state(state)
        return logs

    def validate(self) -> dict[str, float]:
        """The loss and metrics on the validation data, as `model.evaluate` gives them."""
        x, y = self.validation
        self.model.reset_metrics()
        trainable, non_trainable, _, metrics = self.read_state()
        state = (trainable, non_trainable, metrics)
        full, rest = _index_batches(np.arange(len(x), dtype=np.int32), VALIDATION_BATCH_SIZE)
        # A convolutional net: a program of one batch, called per batch (see `unrolled`).
        orders = [full[i : i + 1] for i in range(len(full))] if self.unrolled else [full]
        count = 1 if self.unrolled else None
        for order in [*orders, rest]:
            if order.size:
                state, logs = self._test(state, x, y, order, count=count)
        for variable, value in zip(self.model.metrics_variables, state[2], strict=True):
            variable.assign(value)
        return {name: float(value) for name, value in logs.items()}


def predictor(model: keras.Model, max_batch_size: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    """A function `x -> model outputs`, compiled once per batch-size bucket, for serving.

    `model.predict_on_batch` gathers the model's variables and dispatches through Keras on
    every call, which costs a few milliseconds; this calls one compiled `stateless_call`
    with the variables captured once (so later changes to the model's weights are not
    seen). Batches are padded to the next power of two (at most `max_batch_size`; larger
    inputs go in slices of that size), so a handful of programs serve every size.
    On backends other than JAX it returns `model.predict_on_batch`.
    """
    if keras.backend.backend() != "jax":
        return lambda x: np.asarray(model.predict_on_batch(x))
    import jax

    _configure_jax()
    # Copies: Keras's own `fit` and `predict` donate (free) the variables' current buffers.
    trainable = [jax.numpy.array(v.value, copy=True) for v in model.trainable_variables]
    non_trainable = [jax.numpy.array(v.value, copy=True) for v in model.non_trainable_variables]

    @jax.jit
    def outputs(x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        parts = []
        for start in range(0, len(x), max_batch_size):
            part = x[start : start + max_batch_size]
            size = min(max_batch_size, 1 << max(len(part) - 1, 0).bit_length())
            padded = np.zeros((size, *part.shape[1:]), np.float32)
            padded[: len(part)] = part
            parts.append(np.asarray(outputs(padded))[: len(part)])
        return np.concatenate(parts) if parts else np.zeros((0, *model.output_shape[1:]))

    return predict
