"""Look inside a trained run: what the network learned (`inspect`) and why it answered (`explain`).

- `first_layer_weights`: the first Dense layer's weights as one 28×28 picture per unit (or a
  conv net's first filters), drawn on a diverging scale centred at 0 by `save_weights`.
- `activation_stats`: per hidden layer, on N test digits: a histogram, the share of saturated
  sigmoid/tanh activations (within 0.01 of a bound), the share of dead ReLU units (zero on
  every digit), and the mean activation per unit, sorted.
- `class_inputs`: per class, the mean of the correctly classified test digits weighted by
  the class probability, beside the class's "template": that average digit's ink times
  the mean gradient of the class logit (pixels inked by < 1% of training digits blank).
- `explain`: for one digit, every shown layer's activations, the top-3 classes and a saliency
  map: the gradient of the class score (the output layer's pre-activation, its logit) with
  respect to the input pixels, by the chain rule in NumPy (`NumpyProbe`) or JAX autodiff
  through the model's `stateless_call` where NumPy lacks a layer's rule, or integrated
  gradients (Sundararajan et al. 2017) from a black image, the default.

Integrated gradients is the default because it measures better on the occlusion check
(`occlusion_drop`): removing the 5% of pixels it ranks highest lowers the class probability
far more than removing 5% random ink pixels, while the plain gradient ranks background
pixels high, where removing "ink" changes nothing (see `tests/test_insight.py` and the
README's "What a saliency map does and doesn't tell you").

Everything here reads a `Run`; figures are matplotlib `Figure`s written by
`plots.save_figure`. The probe is built once per run (`Probe.of(run)`).

The package: `probe` (the compiled model), `inspection` (what it learned), `explanation`
(why it answered); the public names are re-exported here.
"""

from digitlab.insight.explanation import (
    MAX_MAP_SIDE,
    MAX_MAPS,
    DigitChoice,
    ExplainedDigit,
    Explanation,
    explain,
    explain_digit,
    occlusion_drop,
    saliency_base64,
    saliency_png,
    saliency_rgba,
    save_explanation,
)
from digitlab.insight.inspection import (
    ACTIVATIONS_PNG,
    BOUNDS,
    CLASS_INPUTS_PNG,
    HISTOGRAM_BINS,
    INK_SHARE_MIN,
    MAX_TILES,
    RELU_LIKE,
    SATURATION_MARGIN,
    WEIGHTS_PNG,
    Inspection,
    activation_stats,
    class_inputs,
    first_layer_weights,
    ink_share,
    inspect,
    save_activations,
    save_class_inputs,
    save_weights,
)
from digitlab.insight.probe import IG_STEPS, METHODS, SHOWN_LAYERS, LayerInfo, Probe
from digitlab.runs import INSPECT_DIR

__all__ = [
    "ACTIVATIONS_PNG",
    "BOUNDS",
    "CLASS_INPUTS_PNG",
    "HISTOGRAM_BINS",
    "IG_STEPS",
    "INK_SHARE_MIN",
    "INSPECT_DIR",
    "MAX_MAPS",
    "MAX_MAP_SIDE",
    "MAX_TILES",
    "METHODS",
    "RELU_LIKE",
    "SATURATION_MARGIN",
    "SHOWN_LAYERS",
    "WEIGHTS_PNG",
    "DigitChoice",
    "ExplainedDigit",
    "Explanation",
    "Inspection",
    "LayerInfo",
    "Probe",
    "activation_stats",
    "class_inputs",
    "explain",
    "explain_digit",
    "first_layer_weights",
    "ink_share",
    "inspect",
    "occlusion_drop",
    "saliency_base64",
    "saliency_png",
    "saliency_rgba",
    "save_activations",
    "save_class_inputs",
    "save_explanation",
    "save_weights",
]
