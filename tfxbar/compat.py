"""Guards that keep tfxbar on tf_keras (Keras 2), the Keras that tfmot 0.8 uses.

TensorFlow 2.21 ships Keras 3 as ``tf.keras``/``keras``, but tfmot 0.8 only understands
``tf_keras`` objects. Mixing them fails deep inside tfmot with unrelated-looking errors, so
every public tfxbar entry point checks its Keras arguments up front.
"""

from __future__ import annotations

from typing import Any

import tf_keras as keras

__all__ = ["require_tf_keras"]


def _is_keras3(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.")


def require_tf_keras(obj: Any, argument: str = "model") -> None:
    """Raise a `TypeError` unless `obj` is a tf_keras layer or model.

    Arguments:
        obj: the object a tfxbar API received.
        argument: the name of that argument, for the message.

    Raises:
        TypeError: `obj` is a Keras 3 object, or not a Keras layer at all.
    """
    if isinstance(obj, keras.layers.Layer):
        return
    if _is_keras3(obj):
        raise TypeError(
            f"`{argument}` is a Keras 3 object ({type(obj).__module__}.{type(obj).__name__}). "
            "tfxbar builds on tensorflow-model-optimization, which only supports Keras 2: "
            "build your model with `import tf_keras as keras` instead of `import keras` or "
            "`tf.keras`."
        )
    raise TypeError(
        f"`{argument}` must be a tf_keras layer or model, got {type(obj).__name__}. "
        "Build it with `import tf_keras as keras`."
    )
