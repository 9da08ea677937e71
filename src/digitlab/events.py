"""TensorBoard event files for every run: `RUN/tensorboard/`, written with tensorboardX.

`tensorboard --logdir runs` (or `digitlab board`) then shows every run, each its own entry
in TensorBoard's run selector:

- Scalars, one point per epoch (step = the epoch, counted from 1 as in history.csv): the
  fit's logs, `loss`, `accuracy`, `val_loss`, `val_accuracy`, and any other metric.
- Histograms, once per epoch: each layer's weights (`weights/<layer>/<weight>`) and each
  layer's activations (`activations/<layer>`) on a fixed batch of the first
  `SAMPLE_SIZE` training digits.
- Images, once the run is complete: the confusion matrix, the misclassified gallery and the
  training curves, the same pictures as the run's PNG files.
- Text: the resolved config (`config`), as config.json holds it.
- The mechanisms, when the run records them (issue 21, `mechanisms.recorder`; step 0 is
  before training): scalars `mechanisms/gradient_norm/<layer>`,
  `mechanisms/update_ratio/<layer>` (CS231n's rule of thumb: about 1e-3),
  `mechanisms/saturated/<layer>` and `mechanisms/dead/<layer>` (shares, 0–1) and
  `mechanisms/noise_scale` (B_simple, digits); histograms `mechanisms/activations/<layer>`
  over the recorder's fixed bins, which TensorBoard's histogram tab stacks over epochs.

The epoch loop stays fast: `EpochEvents` is a Keras callback whose `on_epoch_end` runs
outside `fastfit`'s compiled epoch; one compiled call (built once) runs a sub-model for the
activations and reduces every weight and activation to a 30-bucket histogram on the device,
so only a few numbers per tensor reach Python. The summaries are kept in memory (a few kB
per epoch); `write` puts them into the run's staging folder when the run is saved, so event
files appear with the run and, like its other files, are never half-written: an interrupted
run keeps the epochs it finished, and a resumed one keeps its earlier event files and adds
one for the epochs it appends.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

SAMPLE_SIZE = 256  # training digits whose activations are histogrammed every epoch
HISTOGRAM_BINS = 30  # as tf.summary.histogram and Keras's TensorBoard callback
IMAGE_TAGS = {  # run picture -> image tag
    "confusion_matrix.png": "confusion_matrix",
    "misclassified.png": "misclassified",
    "training_curves.png": "training_curves",
}


class EpochEvents(keras.callbacks.Callback):
    """Records each epoch's scalars and weight and activation histograms for TensorBoard.

    Args:
        x: the training inputs as the fit gets them; the first `sample_size` rows are the
            fixed batch whose activations are recorded.
        input_scale: the factor the fit applies to `x` (fastfit's `input_scale`), if any.
        sample_size: how many rows of `x` to run through the network each epoch.

    The summaries stay in memory until `write` puts them into a run folder.
    """

    def __init__(
        self, x: np.ndarray, input_scale: float | None = None, sample_size: int = SAMPLE_SIZE
    ):
        super().__init__()
        sample = np.asarray(x[:sample_size], dtype=np.float32)
        self.sample = sample * np.float32(input_scale) if input_scale is not None else sample
        self.events: list[tuple[int, float, object]] = []  # (step, wall time, Summary)
        self._program = None

    def on_epoch_end(self, epoch, logs=None):
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        scalars = [
            scalar(key, float(value))
            for key, value in (logs or {}).items()
            if np.ndim(value) == 0 and np.isfinite(float(value))
        ]
        values = [v for summary in scalars for v in summary.value] + self._histograms()
        self.events.append((epoch + 1, time.time(), Summary(value=values)))

    # Histograms --------------------------------------------------------------------------

    def _histograms(self) -> list:
        """One histogram summary per weight and per layer's activations, all computed by one
        compiled call (built on the first epoch): the numbers leave the device as a few
        dozen per tensor, not as the tensors."""
        if self._program is None:
            self._program = _HistogramProgram(self.model)
        return self._program(self.sample)

    # Writing -----------------------------------------------------------------------------

    def write(
        self,
        folder: Path,
        *,
        step: int,
        config_text: str,
        pictures: Path | None = None,
        previous: Path | None = None,
        mechanisms: dict | None = None,
    ) -> None:
        """Write the recorded epochs, the config and the pictures as event files in `folder`.

        Args:
            folder: the run's `tensorboard/` folder, inside its staging folder.
            step: the step of the config and pictures: the epochs done.
            config_text: the resolved config (config.json's text).
            pictures: a folder holding the run's PNGs (`IMAGE_TAGS`), if it was evaluated.
            previous: an earlier `tensorboard/` folder of the same run (a resume); its event
                files are kept, and the new file, named to sort after them, continues them.
            mechanisms: the recorder's record (mechanisms.json's), if the run keeps one; the
                epochs this fit recorded are written (from step 0 for a new run).
        """
        from tensorboardX.writer import FileWriter

        folder.mkdir(parents=True, exist_ok=True)
        if previous is not None and previous.is_dir():
            for old in sorted(previous.glob("events.out.tfevents.*")):
                if old.is_file() and not old.is_symlink():
                    shutil.copy2(old, folder / old.name)
        first = self.events[0][0] if self.events else step
        # tensorboardX names the file events.out.tfevents.<seconds>.<host><suffix>; the
        # suffix keeps a resume's file after the earlier one even within the same second.
        writer = FileWriter(str(folder), filename_suffix=f".epoch{first:06d}")
        try:
            for epoch, wall, summary in self.events:
                writer.add_summary(summary, global_step=epoch, walltime=wall)
            resumed = previous is not None and previous.is_dir()
            try:
                recorded = mechanism_summaries(mechanisms or {}, first if resumed else 0)
            except (TypeError, ValueError, AttributeError):  # a damaged mechanisms.json
                recorded = []  # continued: its events are left out, the run is not
            for epoch, summary in recorded:
                writer.add_summary(summary, global_step=epoch)
            writer.add_summary(_config_summary(config_text), global_step=step)
            for summary in _picture_summaries(pictures):
                writer.add_summary(summary, global_step=step)
        finally:
            writer.close()


def statistics(values):
    """A tensor's histogram as one vector (keras.ops, so it compiles into the caller):
    `[count, min, max, sum, sum of squares, first edge, width, *bucket counts]` over the
    finite values, in `HISTOGRAM_BINS` equal buckets from min to max (a constant tensor:
    one unit around it, as `np.histogram` does)."""
    ops = keras.ops
    v = ops.cast(ops.reshape(values, (-1,)), "float32")
    finite = ops.isfinite(v)
    weight = ops.cast(finite, "float32")
    safe = ops.where(finite, v, 0.0)
    low = ops.min(ops.where(finite, v, np.inf))
    high = ops.max(ops.where(finite, v, -np.inf))
    spread = high > low
    first = ops.where(spread, low, low - 0.5)
    width = ops.where(spread, high - low, 1.0)
    index = ops.floor((safe - first) / width * HISTOGRAM_BINS)
    index = ops.cast(ops.clip(ops.where(finite, index, 0.0), 0, HISTOGRAM_BINS - 1), "int32")
    counts = ops.segment_sum(weight, index, num_segments=HISTOGRAM_BINS)
    head = [ops.sum(weight), low, high, ops.sum(safe), ops.sum(safe * safe), first, width]
    return ops.concatenate([ops.stack(head), ops.cast(counts, "float32")])


def histogram_value(tag: str, row: np.ndarray):
    """A `statistics` row as TensorBoard's histogram summary value; None if it counted no
    finite value."""
    from tensorboardX.proto.summary_pb2 import HistogramProto, Summary

    count, low, high, total, squares, first, width = (float(v) for v in row[:7])
    if count == 0:
        return None
    edges = first + width * np.arange(HISTOGRAM_BINS + 1) / HISTOGRAM_BINS
    histogram = HistogramProto(
        min=low,
        max=high,
        num=count,
        sum=total,
        sum_squares=squares,
        bucket_limit=edges.tolist(),  # the right edges, after an empty bucket left of min
        bucket=[0.0, *row[7:].tolist()],
    )
    return Summary.Value(tag=tag, histo=histogram)


def mechanism_summaries(values: dict, since: int = 0) -> list[tuple[int, object]]:
    """(epoch, Summary) of each epoch ≥ `since` in a recorder's `values` (the module's
    docstring lists the tags); a share that doesn't apply to a layer (None) is left out."""
    from tensorboardX.proto.summary_pb2 import HistogramProto, Summary

    epochs = values.get("epochs", [])
    rows: dict[int, list] = {epoch: [] for epoch in epochs if epoch >= since}

    def scalar(epoch: int, tag: str, value) -> None:
        if epoch in rows and value is not None and np.isfinite(value):
            rows[epoch].append(Summary.Value(tag=tag, simple_value=float(value)))

    for key, name in (("gradient_norms", "gradient_norm"), ("update_ratios", "update_ratio")):
        for layer, series in values.get(key, {}).items():
            for epoch, value in zip(epochs, series, strict=False):
                scalar(epoch, f"mechanisms/{name}/{layer}", value)
    for layer, record in values.get("activations", {}).items():
        edges = np.asarray(record.get("edges", []), dtype=np.float64)
        for share in ("saturated", "dead"):
            for epoch, value in zip(epochs, record.get(share, []), strict=False):
                scalar(epoch, f"mechanisms/{share}/{layer}", value)
        for epoch, counts in zip(epochs, record.get("counts", []), strict=False):
            counts = np.asarray(counts, dtype=np.float64)
            if epoch not in rows or len(edges) != len(counts) + 1 or counts.sum() == 0:
                continue
            centres = (edges[:-1] + edges[1:]) / 2  # the record keeps counts, not values
            histogram = HistogramProto(
                min=float(edges[0]),
                max=float(edges[-1]),
                num=float(counts.sum()),
                sum=float(counts @ centres),
                sum_squares=float(counts @ centres**2),
                bucket_limit=edges.tolist(),  # as `histogram_value`: right edges after an
                bucket=[0.0, *counts.tolist()],  # empty bucket left of the first
            )
            tag = f"mechanisms/activations/{layer}"
            rows[epoch].append(Summary.Value(tag=tag, histo=histogram))
    noise = values.get("noise_scale", {})
    for epoch, value in zip(noise.get("epochs", []), noise.get("simple", []), strict=False):
        scalar(epoch, "mechanisms/noise_scale", value)
    return [(epoch, Summary(value=found)) for epoch, found in rows.items() if found]


class _HistogramProgram:
    """`sample -> [histogram summary values]` for every float weight of every layer and
    every layer's output on `sample`, as one compiled JAX program (a sub-model whose outputs
    are the layers' outputs, called statelessly in inference mode: dropout passes all)."""

    def __init__(self, model: keras.Model):
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        self.weights = [
            (f"weights/{layer.name}/{weight.name}", weight)
            for layer in layers
            for weight in layer.weights
            if "float" in str(weight.dtype)
        ]
        try:
            self.probe = keras.Model(model.inputs, [layer.output for layer in layers])
            self.layer_tags = [f"activations/{layer.name}" for layer in layers]
        except (AttributeError, ValueError, TypeError):  # a subclassed model: no layer graph
            self.probe, self.layer_tags = None, []
        self.tags = [tag for tag, _ in self.weights] + self.layer_tags
        self._compiled = None
        if keras.backend.backend() == "jax":
            import jax

            self._compiled = jax.jit(self._rows)  # no donation: fastfit's state keeps them

    def _rows(self, weights, trainable, non_trainable, x):
        outputs = []
        if self.probe is not None:
            outputs = self.probe.stateless_call(trainable, non_trainable, x, training=False)[0]
        return keras.ops.stack([statistics(t) for t in [*weights, *outputs]])

    def __call__(self, sample: np.ndarray) -> list:
        weights = [weight.value for _, weight in self.weights]
        probe = self.probe
        trainable = [v.value for v in probe.trainable_variables] if probe is not None else []
        non_trainable = [v.value for v in probe.non_trainable_variables] if probe else []
        if self._compiled is not None:
            rows = self._compiled(weights, trainable, non_trainable, sample)
        else:
            outputs = probe.predict_on_batch(sample) if probe is not None else []
            rows = keras.ops.stack([statistics(t) for t in [*weights, *outputs]])
        rows = keras.ops.convert_to_numpy(rows)
        values = [histogram_value(tag, row) for tag, row in zip(self.tags, rows, strict=True)]
        return [value for value in values if value is not None]


def _config_summary(config_text: str):
    """The config as Markdown text: a code block, so TensorBoard shows it as it is."""
    from tensorboardX.summary import text

    summary = text("config", "".join(f"    {line}\n" for line in config_text.splitlines()))
    summary.value[0].tag = "config"  # tensorboardX would call it "config/text_summary"
    return summary


def _picture_summaries(folder: Path | None) -> list:
    from PIL import Image
    from tensorboardX.summary import image

    summaries = []
    for name, tag in IMAGE_TAGS.items():
        path = folder / name if folder is not None else None
        if path is not None and path.is_file():
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            summaries.append(image(tag, pixels, dataformats="HWC"))
    return summaries
