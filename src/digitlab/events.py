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

The epoch loop stays fast: `EpochEvents` is a Keras callback whose `on_epoch_end` runs
outside `fastfit`'s compiled epoch; it computes the activations with one compiled forward
pass of a sub-model built once, reduces every tensor to a 30-bucket histogram, and keeps
the summaries in memory (a few kB per epoch). `write` puts them into the run's staging
folder when the run is saved, so event files appear with the run and, like its other files,
are never half-written: an interrupted run keeps the epochs it finished, and a resumed one
keeps its earlier event files and adds one for the epochs it appends.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np

EVENTS_DIR = "tensorboard"  # inside a run folder
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
        self._forward = None

    def on_epoch_end(self, epoch, logs=None):
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        values = [
            scalar(key, float(value))
            for key, value in (logs or {}).items()
            if np.ndim(value) == 0 and np.isfinite(float(value))
        ]
        values += self._histograms()
        merged = Summary(value=[v for summary in values for v in summary.value])
        self.events.append((epoch + 1, time.time(), merged))

    # Histograms --------------------------------------------------------------------------

    def _layers(self) -> list[keras.layers.Layer]:
        return [
            layer for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer)
        ]

    def _histograms(self) -> list:
        summaries = []
        for layer in self._layers():
            for weight in layer.weights:
                if "float" in str(weight.dtype):
                    name = f"weights/{layer.name}/{weight.name}"
                    summaries.append(_histogram(name, keras.ops.convert_to_numpy(weight.value)))
        activations = self._activations()
        for layer, values in zip(self._layers(), activations, strict=False):
            summaries.append(_histogram(f"activations/{layer.name}", values))
        return [summary for summary in summaries if summary is not None]

    def _activations(self) -> list[np.ndarray]:
        """Every layer's output on the fixed sample, by one forward pass of a sub-model whose
        outputs are the layers' outputs (built and compiled once; inference mode, so dropout
        passes everything through)."""
        if self._forward is None:
            self._forward = _layer_outputs(self.model, self._layers())
        if self._forward is False or not len(self.sample):
            return []
        return [np.asarray(out) for out in self._forward(self.sample)]

    # Writing -----------------------------------------------------------------------------

    def write(
        self,
        folder: Path,
        *,
        step: int,
        config_text: str,
        pictures: Path | None = None,
        previous: Path | None = None,
    ) -> None:
        """Write the recorded epochs, the config and the pictures as event files in `folder`.

        Args:
            folder: the run's `tensorboard/` folder, inside its staging folder.
            step: the step of the config and pictures: the epochs done.
            config_text: the resolved config (config.json's text).
            pictures: a folder holding the run's PNGs (`IMAGE_TAGS`), if it was evaluated.
            previous: an earlier `tensorboard/` folder of the same run (a resume); its event
                files are kept, and the new file, named to sort after them, continues them.
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
            writer.add_summary(_config_summary(config_text), global_step=step)
            for summary in _picture_summaries(pictures):
                writer.add_summary(summary, global_step=step)
        finally:
            writer.close()


def _histogram(tag: str, values: np.ndarray):
    """A 30-bucket histogram summary of the finite values, or None if there are none."""
    from tensorboardX.summary import histogram

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    return histogram(tag, values, bins=HISTOGRAM_BINS) if values.size else None


def _layer_outputs(model: keras.Model, layers: list[keras.layers.Layer]):
    """A function `x -> [each layer's output]`, compiled once; False if the model is not a
    graph of layers (a subclassed model) and has no per-layer outputs to show."""
    try:
        probe = keras.Model(model.inputs, [layer.output for layer in layers])
    except (AttributeError, ValueError, TypeError):
        return False
    if keras.backend.backend() != "jax":
        return probe.predict_on_batch
    import jax

    # Keras's own predict donates the variables' buffers, which fastfit's state still holds;
    # a stateless call reads them and leaves them alone.
    @jax.jit
    def outputs(trainable, non_trainable, x):
        return probe.stateless_call(trainable, non_trainable, x, training=False)[0]

    def forward(x: np.ndarray) -> list:
        trainable = [v.value for v in probe.trainable_variables]
        non_trainable = [v.value for v in probe.non_trainable_variables]
        return outputs(trainable, non_trainable, x)

    return forward


def _config_summary(config_text: str):
    """The config as Markdown text: a code block, so TensorBoard shows it as it is."""
    from tensorboardX.summary import text

    return text("config", "".join(f"    {line}\n" for line in config_text.splitlines()))


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
