"""The classic Keras MNIST notebook, as written, on tf.keras (TensorFlow backend); one JSON line.

Runs in benchmarks/.venv-tf (tensorflow-cpu), which `run_all.py` creates. The only changes to
the notebook: the arrays come from an .npz that digitlab wrote (the same MNIST for every
contender), fit prints one line per epoch, and epoch times are recorded by a callback.

    benchmarks/.venv-tf/bin/python benchmarks/bench_notebook_tf.py --data benchmarks/out/mnist.npz
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from epoch_times import EpochTimes  # noqa: E402  benchmarks/, the script's own folder
from tensorflow import keras  # noqa: E402
from tensorflow.keras.layers import Dense, Dropout  # noqa: E402
from tensorflow.keras.models import Sequential  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

with np.load(args.data) as f:
    x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]

# --- the notebook ---
x_train = x_train.reshape(60000, 784)
x_test = x_test.reshape(10000, 784)
x_train = x_train / 255
x_test = x_test / 255

model = Sequential()
model.add(Dense(100, activation="sigmoid", input_shape=(784,)))
model.add(Dense(100, activation="relu"))
model.add(Dropout(0.2))
model.add(Dense(100, activation="relu"))
model.add(Dropout(0.2))
model.add(Dense(10, activation="sigmoid"))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])


times = EpochTimes()
model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, callbacks=[times], verbose=2)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
# --- end of the notebook ---

json.dump(
    {
        "epoch_seconds": times.seconds,
        "steady_epoch_s": statistics.median(times.seconds[2:]),
        "test_accuracy": float(accuracy),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "process_s": time.perf_counter() - START,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "load_average": os.getloadavg(),
    },
    sys.stdout,
)
print()
