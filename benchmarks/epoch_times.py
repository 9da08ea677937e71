"""A Keras callback that times each epoch: shared by the contenders that train through Keras
(bench_notebook_tf.py in the TensorFlow virtualenv, bench_fastfit.py in the project's)."""

import time

import keras


class EpochTimes(keras.callbacks.Callback):
    """`seconds[e]`: wall time of epoch `e`, from `on_epoch_begin` to `on_epoch_end`."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
