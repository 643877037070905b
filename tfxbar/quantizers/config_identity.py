"""Quantizers are values: equal, hashable and printed by their Keras config."""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigIdentity"]


class ConfigIdentity:
    """Mixin: `from_config`, ``==``, `hash` and `repr` all follow `get_config()`.

    The planner compares quantizers (two consumers asking for the same input quantizer is not
    a conflict) and reports print them, so two quantizers with the same config must be equal.
    """

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
