"""Access to a causal LM's decoder layers, shared by steering hooks and activation capture."""

from __future__ import annotations

from typing import Any

# ----------------------------------------------------------------------------- model access


def decoder_and_layers(model: Any) -> tuple[Any, Any]:
    """(decoder, its ModuleList of decoder layers) of a causal LM, through PEFT wrappers.

    ``decoder`` is the module whose forward runs embeddings, layers and final norm without the
    LM head (``LlamaForCausalLM.model``); LoRA layers injected by PEFT live inside it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base if hasattr(base, "layers") else getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None or not hasattr(layers, "__len__"):
        raise TypeError(f"cannot find the decoder layers of {type(model).__name__} (expected "
                        "a Hugging Face causal LM with `.model.layers`, or a PEFT wrapper of "
                        "one)")
    return decoder, layers


def _input_device(decoder: Any):
    return decoder.get_input_embeddings().weight.device


def _hidden_size(decoder: Any) -> int:
    return int(decoder.get_input_embeddings().weight.shape[1])
