"""Keep a QuantizeWrapper's trainable-weight order the same at creation and at load time.

`QuantizeWrapperV2.build` lists the wrapped layer's weights before building it. When
`quantize_apply` wraps an already-built layer they come first; when `load_model` rebuilds the
wrapper they come after the quantizer's variables. h5 files restore weights by position, so
the two orders must agree: quantizers call this from `build` to put the inner weights first.
"""

from __future__ import annotations

from typing import Any

__all__ = ["inner_weights_first"]


def inner_weights_first(wrapper: Any) -> None:
    """Prepend the wrapped layer's trainable weights to `wrapper`'s list if they are missing."""
    inner = getattr(getattr(wrapper, "layer", None), "trainable_weights", None)
    listed = getattr(wrapper, "_trainable_weights", None)
    if not inner or listed is None:
        return
    missing = [w for w in inner if not any(w is other for other in listed)]
    listed[:0] = missing
