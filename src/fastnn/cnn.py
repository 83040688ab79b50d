"""The workshop's neural networks, in keras 3: the MLP on flattened pixels,
the LeNet-style CNN, and the CNN's penultimate layer as an image embedding.

Optional: ``pip install -e ".[cnn]"`` (keras 3 on the JAX CPU backend; see
``docs/cnn.md`` for the measurements behind that choice). Without it,
:func:`require_keras` raises :class:`MissingExtra`, whose message names the
install command (the CLI prints it and exits with status 2).

The models are the workshop's (``docs/workshop.md`` of the shared folder):

* MLP: Flatten -> Dense 512 -> 120 -> 84 (relu) -> 10 (softmax);
* LeNet: Conv2D(6, 3x3, relu) -> AveragePooling2D -> Conv2D(16, 3x3, relu)
  -> AveragePooling2D -> Flatten -> Dense 120 -> 84 (relu) -> 10 (softmax);

both with adam, batch 256, pixels scaled to [0, 1]. Two departures, both
stated in the report: the loss is categorical cross-entropy (the workshop's
``binary_crossentropy`` with ``metrics=['accuracy']`` made keras report the
per-output binary accuracy, ~0.9 for any model that predicts mostly zeros),
and accuracy is measured on the held-out test set (the workshop validated
the CNN on its training set). The embedding of an image is the 84-unit
layer's output, as the workshop's ``extractor(...)[-2]``.
"""

import os
import sys
import time

INSTALL_HINT = 'pip install -e ".[cnn]"'
EMBEDDING_LAYER = "embedding"     # the 84-unit layer: its output is the embedding
DEFAULT_EPOCHS = 10               # ~2 minutes for both models on CIFAR-10 here (2 cores)
BATCH_SIZE = 256                  # the workshop's
SEED = 0


class MissingExtra(ImportError):
    """keras (the optional ``cnn`` extra) is not installed."""


def require_keras():
    """Import keras on the JAX backend (unless ``KERAS_BACKEND`` says
    otherwise); :class:`MissingExtra` naming the install command when absent."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as exc:
        raise MissingExtra(f"the CNN rows need keras 3 and a backend: {INSTALL_HINT}") from exc
    if int(keras.__version__.split(".")[0]) < 3:
        raise MissingExtra(f"keras {keras.__version__} found, keras 3 is needed: {INSTALL_HINT}")
    return keras


def scale_images(x):
    """uint8 images -> float32 in [0, 1], with a channel axis (grey images
    get one)."""
    import numpy as np

    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (n, rows, cols[, channels]), got shape {x.shape}")
    return (x.astype(np.float32) / np.float32(255.0))


def build_model(kind, input_shape, n_classes):
    """The workshop's ``'mlp'`` or ``'lenet'`` (compiled, seeded)."""
    keras = require_keras()
    from keras import layers

    keras.utils.set_random_seed(SEED)
    if kind == "mlp":
        body = [layers.Flatten(), layers.Dense(512, activation="relu")]
    elif kind == "lenet":
        if min(input_shape[:2]) < 10:
            raise ValueError(f"the LeNet needs images of at least 10x10 pixels, got "
                             f"{input_shape[:2]}")
        body = [layers.Conv2D(6, (3, 3), activation="relu"), layers.AveragePooling2D((2, 2)),
                layers.Conv2D(16, (3, 3), activation="relu"), layers.AveragePooling2D((2, 2)),
                layers.Flatten()]
    else:
        raise ValueError(f"model kind must be 'mlp' or 'lenet', got {kind!r}")
    model = keras.Sequential(
        [keras.Input(shape=input_shape)] + body
        + [layers.Dense(120, activation="relu"),
           layers.Dense(84, activation="relu", name=EMBEDDING_LAYER),
           layers.Dense(n_classes, activation="softmax")], name=kind)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def train(kind, x_train, y_train, x_test, y_test, n_classes, epochs=DEFAULT_EPOCHS,
          progress=None):
    """Train the workshop's ``kind`` model on uint8 images; the test split is
    the validation data (per-epoch test loss and accuracy).

    ``progress(line)`` receives one line per epoch. Returns ``(model,
    history)``, ``history`` a dict of per-epoch lists (``loss``,
    ``accuracy``, ``val_loss``, ``val_accuracy``, ``seconds``).
    """
    keras = require_keras()
    import numpy as np

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    xs, xt = scale_images(x_train), scale_images(x_test)
    ys = keras.utils.to_categorical(np.asarray(y_train), n_classes)
    yt = keras.utils.to_categorical(np.asarray(y_test), n_classes)
    model = build_model(kind, xs.shape[1:], n_classes)
    seconds = []

    class _Epochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)
            if progress is not None:
                progress(f"{kind} epoch {epoch + 1}/{epochs}: loss {logs['loss']:.3f} "
                         f"accuracy {logs['accuracy']:.3f} test loss {logs['val_loss']:.3f} "
                         f"test accuracy {logs['val_accuracy']:.3f} ({seconds[-1]:.1f} s)")

    hist = model.fit(xs, ys, epochs=epochs, batch_size=BATCH_SIZE, validation_data=(xt, yt),
                     shuffle=True, verbose=0, callbacks=[_Epochs()])
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["seconds"] = seconds
    return model, history


def predict_classes(model, x):
    """Class of each uint8 image (argmax of the softmax)."""
    import numpy as np

    return np.asarray(model.predict(scale_images(x), batch_size=1024, verbose=0)).argmax(axis=1)


def embed(model, x):
    """The ``EMBEDDING_LAYER`` output (84 values, float32) of each uint8 image."""
    keras = require_keras()
    import numpy as np

    extractor = keras.Model(inputs=model.inputs, outputs=model.get_layer(EMBEDDING_LAYER).output)
    out = extractor.predict(scale_images(x), batch_size=1024, verbose=0)
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32))


def model_path(model_dir, dataset_key, kind, epochs):
    """Where a trained model is kept: ``<dir>/<dataset>-<kind>-<epochs>ep.keras``."""
    from pathlib import Path

    return Path(model_dir) / f"{dataset_key}-{kind}-{epochs}ep.keras"


def save(model, path):
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def load(path):
    keras = require_keras()
    try:
        return keras.models.load_model(str(path))
    except Exception as exc:
        raise ValueError(f"cannot load the keras model {path}: {exc}") from exc


def default_model_dir():
    """``$FASTNN_MODELS``, else ``~/.cache/fastnn/models``."""
    from pathlib import Path

    return Path(os.environ.get("FASTNN_MODELS", Path.home() / ".cache" / "fastnn" / "models"))


def say(line):
    print(line, file=sys.stderr, flush=True)
