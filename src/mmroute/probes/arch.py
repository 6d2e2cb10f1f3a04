"""Where a ``transformers`` model keeps its transformer layers, and what a layer needs to run alone.

Probe routers read layer ``l`` of a backbone. The convention throughout :mod:`mmroute.probes`
follows ``output_hidden_states``: ``hidden_states[0]`` is the embedding output and
``hidden_states[l]`` the output of the ``l``-th transformer layer (``layers[l - 1]``), so
*layer l* means ``layers[l - 1]`` and the *layer l-1 states* are its input, ``hidden_states[l - 1]``.

Supported backbones: decoder-only LMs with rotary positions (Qwen2, Llama, ...), vision-language
models whose text tower uses (multimodal) rotary positions (Qwen2-VL, Qwen2.5-VL), and encoders
with absolute position embeddings (BERT, MiniLM), whose layers need no position input.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["LayerStack", "find_layer_stack", "check_layer_index", "text_config"]

log = logging.getLogger(__name__)

# Sub-module names of vision / audio towers, whose block lists must never be taken for the text layers.
_TOWER_WORDS = ("visual", "vision", "audio", "image_encoder", "patch")


def text_config(model: nn.Module) -> Any:
    """The config of the text tower (the model's own config for text-only models)."""
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


@dataclass(frozen=True)
class LayerStack:
    """The transformer layers of a backbone's text tower.

    Attributes
    ----------
    layers : nn.ModuleList of length n_layers
    path : dotted name of ``layers`` inside the model, e.g. ``"language_model.layers"``
    rotary : the module mapping ``(x, position_ids)`` to ``(cos, sin)``, or None for models with
        absolute position embeddings (their layers need no position input)
    causal : whether self-attention is causal (decoders) or bidirectional (encoders)
    """

    layers: nn.ModuleList
    path: str
    rotary: nn.Module | None
    causal: bool

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer(self, index: int) -> nn.Module:
        """Transformer layer ``index`` (1-based, ``hidden_states[index]`` is its output)."""
        check_layer_index(index, self.n_layers)
        return self.layers[index - 1]

    def takes_position_embeddings(self, index: int) -> bool:
        return "position_embeddings" in inspect.signature(self.layer(index).forward).parameters


def check_layer_index(index: int, n_layers: int) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= n_layers:
        raise ValueError(f"layer must be an int in 1..{n_layers} (hidden_states index of the layer "
                         f"output; the backbone has {n_layers} layers), got {index!r}")


def find_layer_stack(model: nn.Module) -> LayerStack:
    """Locate the text tower's layer list, its rotary embedding and its attention direction.

    The layer list is the ``nn.ModuleList`` whose length is the text config's
    ``num_hidden_layers`` outside any vision/audio tower; the rotary module is the ``rotary_emb``
    sibling of that list (absent for absolute-position encoders).
    """
    n_layers = getattr(text_config(model), "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        raise ValueError(f"{type(model).__name__}: its config has no integer num_hidden_layers; "
                         "cannot locate the transformer layers")
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) != n_layers:
            continue
        if any(w in part for part in name.split(".") for w in _TOWER_WORDS):
            continue
        candidates.append((not name.split(".")[-1].startswith("layer"), name.count("."), name, module))
    if not candidates:
        raise ValueError(f"{type(model).__name__}: no module list of {n_layers} layers found outside "
                         "vision/audio towers; unsupported backbone")
    _, _, path, layers = min(candidates, key=lambda c: c[:3])
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    rotary = getattr(parent, "rotary_emb", None)
    if rotary is None:
        # Encoders nest layers one level deeper (bert.encoder.layer); the rotary sits on the text model.
        grand = path.rsplit(".", 2)[0] if path.count(".") >= 2 else ""
        holder = model.get_submodule(grand) if grand else model
        rotary = getattr(holder, "rotary_emb", None)
    causal = any(getattr(m, "is_causal", False) is True for m in layers[0].modules())
    log.debug("layer stack of %s: %s (%d layers), rotary=%s, causal=%s", type(model).__name__, path,
              n_layers, type(rotary).__name__ if rotary is not None else None, causal)
    return LayerStack(layers=layers, path=path, rotary=rotary, causal=causal)


def sliding_window_of(layer: nn.Module) -> int | None:
    """The sliding attention window of a layer (None for full attention)."""
    for m in layer.modules():
        w = getattr(m, "sliding_window", None)
        if isinstance(w, int) and w > 0:
            return w
    return None
