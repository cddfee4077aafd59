"""Activation steering at generation time: add ``multiplier * v_l`` to decoder layer outputs.

Why this module exists: the steered AF rollouts (paper section 2.4, Appendix D.6) run the same
generation interface as every other condition, with one change: forward hooks on the selected
decoder layers add the scaled vector to the layer's output at every position, prompt and
generated tokens alike (with a KV cache, the prompt positions are steered when the prefix is
computed and each decoding step steers its new token). Layer ``l`` means the OUTPUT of decoder
layer ``l``, the same tensor ``steering.activations`` pools and ``steering.vectors`` fits on.

``steer(model, steering)`` registers the hooks for the duration of a ``with`` block and removes
them in ``finally``, so an exception inside generation never leaves a model steered. A zero
multiplier registers nothing: the unsteered model, bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from motivation_profiles.models.layers import decoder_and_layers


@dataclass(frozen=True)
class Steering:
    """Unit of steering: ``vectors`` (layer -> [d] float32 array) scaled by ``multiplier``.

    ``identity`` names exactly what is added (layers, vector bytes, multiplier): backends key
    their prompt-prefix KV caches on it, since a cache computed under one steering is wrong
    under another."""

    vectors: Mapping[int, np.ndarray]
    multiplier: float
    source: str = ""
    identity: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise ValueError("steering needs at least one layer")
        dims = {np.asarray(v).shape for v in self.vectors.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"steering vectors must all be 1-D of one size, got {sorted(dims)}")
        if not np.isfinite(self.multiplier):
            raise ValueError(f"steering multiplier must be finite, got {self.multiplier}")
        h = hashlib.sha256(repr(float(self.multiplier)).encode())
        for layer in sorted(self.vectors):
            h.update(f"|{int(layer)}|".encode())
            h.update(np.ascontiguousarray(self.vectors[layer], dtype=np.float32).tobytes())
        object.__setattr__(self, "identity", h.hexdigest()[:16])

    @property
    def active(self) -> bool:
        return self.multiplier != 0.0

    @property
    def layers(self) -> list[int]:
        return sorted(int(layer) for layer in self.vectors)


def _add_hook(delta_cpu):
    """Forward hook adding ``delta`` to the layer output; the delta is moved to the output's
    device and dtype once and reused for every later call on that device/dtype."""
    cache: dict[Any, Any] = {}

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        key = (h.device, h.dtype)
        d = cache.get(key)
        if d is None:
            d = cache[key] = delta_cpu.to(device=h.device, dtype=h.dtype)
        h = h + d
        if isinstance(output, tuple):
            return (h, *output[1:])
        return h

    return hook


@contextlib.contextmanager
def steer(model: Any, steering: Steering | None) -> Iterator[None]:
    """Add ``steering.multiplier * v_l`` to the output of each decoder layer ``l`` of ``model``
    (a Hugging Face causal LM or a PEFT wrapper of one) inside the block. ``None`` or a zero
    multiplier: no hooks at all."""
    if steering is None or not steering.active:
        yield
        return
    import torch

    decoder, layers = decoder_and_layers(model)
    bad = [layer for layer in steering.layers if not 0 <= layer < len(layers)]
    if bad:
        raise ValueError(f"steering layers {bad} do not exist; the model has {len(layers)} "
                         "decoder layers")
    width = decoder.get_input_embeddings().weight.shape[1]
    handles = []
    try:
        for layer in steering.layers:
            vec = torch.as_tensor(np.asarray(steering.vectors[layer], dtype=np.float32))
            if vec.shape[0] != width:
                raise ValueError(f"steering vector for layer {layer} has {vec.shape[0]} "
                                 f"dimensions; the model's hidden size is {width}")
            handles.append(layers[layer].register_forward_hook(
                _add_hook(steering.multiplier * vec)))
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["Steering", "steer"]
