"""Modules that hold oneDNN-packed weights: copied and pickled without them, packed again."""

from __future__ import annotations

from typing import Any

from torch import nn


class PackedWeights(nn.Module):
    """A module whose ``packed`` buffer, made by ``_pack()``, is oneDNN's layout of its weight.

    That layout cannot be copied or pickled (a model goes to cluster workers and through
    ``copy.deepcopy``): the buffer is dropped from the state and made again on load.
    """

    def _pack(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_buffers"] = {k: v for k, v in self._buffers.items() if k != "packed"}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._pack()
