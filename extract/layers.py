"""The layer convention of the VLM cache: which hidden state "layer i" means. Written once here.

``thinker.layers`` lists 0-based decoder layers of the thinker's language model. Stored layer
``i`` is the **residual stream leaving decoder layer i**, before the final norm, i.e. exactly
what decoder layer i+1 receives as input (or, for the last layer, what the final norm
receives). For Qwen3-VL this includes the deepstack visual features that the model adds to
the vision-token positions right after each of its first decoder layers: they are part of
the stream the next layer reads.

How each backend reaches that point:

- vLLM (``extract_hidden_states``): aux layer id ``k`` is ``hidden_states + residual`` after
  decoder layer k-1 and after that layer's deepstack addition (``Qwen3LLMModel.forward``), so
  stored layer ``i`` = aux id ``i + 1``; aux id ``num_layers`` is the last layer's output
  before the final norm.
- transformers: ``output_hidden_states`` is NOT the same point. Its hooks record each decoder
  layer's raw return value, *before* the deepstack addition (so entries 1..n_deepstack lack
  the visual features the next layer sees), and its last entry is replaced by the output of
  the final norm. The transformers backend instead records the *input* of decoder layer
  ``i + 1`` (a forward pre-hook), and the input of the final norm for the last layer.

The parity test (tests/extract/test_backends.py) checks both backends agree on every stored
layer. Aux id 0 (the token embeddings) has no stored-layer number and is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LAYER_CONVENTION = "decoder_output_prenorm"
"""Name stored in the cache's StoreMeta.layer_convention (see module docstring)."""


@dataclass(frozen=True)
class HFCapturePoint:
    """Where the transformers backend reads stored layer ``layer``: the first positional input
    of ``language_model.layers[index]`` (module="layer") or of ``language_model.norm`` (module="norm")."""

    layer: int
    module: str
    index: int | None


def validate_layers(layers: Sequence[int], num_hidden_layers: int, model: str = "thinker") -> list[int]:
    """Check ``layers`` against the model depth; returns them as a list of ints.

    They must be strictly increasing (vLLM returns aux states in depth order, whatever order
    they were asked in) and each in ``[0, num_hidden_layers)``."""
    out = [int(x) for x in layers]
    if not out:
        raise ValueError(f"thinker.layers is empty; give at least one decoder layer of {model}")
    bad = [x for x in out if not 0 <= x < num_hidden_layers]
    if bad:
        raise ValueError(
            f"thinker.layers {bad} out of range for {model}: it has {num_hidden_layers} decoder layers "
            f"(valid 0..{num_hidden_layers - 1}, {num_hidden_layers - 1} = last layer's output before the final norm)"
        )
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"thinker.layers {out} must be strictly increasing (sorted, no duplicates)")
    return out


def vllm_aux_layer_ids(layers: Sequence[int], num_hidden_layers: int) -> list[int]:
    """vLLM ``eagle_aux_hidden_state_layer_ids`` for the stored layers (stored i -> aux i+1)."""
    return [i + 1 for i in validate_layers(layers, num_hidden_layers)]


def hf_capture_points(layers: Sequence[int], num_hidden_layers: int) -> list[HFCapturePoint]:
    """Module inputs the transformers backend hooks, one per stored layer, in order."""
    points = []
    for i in validate_layers(layers, num_hidden_layers):
        if i + 1 < num_hidden_layers:
            points.append(HFCapturePoint(layer=i, module="layer", index=i + 1))
        else:
            points.append(HFCapturePoint(layer=i, module="norm", index=None))
    return points
