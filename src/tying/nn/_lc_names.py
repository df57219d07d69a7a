"""``nn.Conv2d``'s and Keras ``LocallyConnected2D``'s keywords, refused by
:class:`~tying.nn.LocallyConnected2d` with what to do here (stop 61).

A conv layer ported to its untied twin (``nn.Conv2d(..., dilation=2)`` ->
``LocallyConnected2d(..., dilation=2)``), or a Keras ``LocallyConnected2D(filters=,
strides=, data_format=)``, got Python's bare "unexpected keyword argument", naming neither
the name here nor that the feature is missing and how to get it.
"""

from __future__ import annotations

__all__ = ["LC_DEFAULTS", "LC_FOREIGN_NAMES"]

# given at these values the keyword asks for what the layer does: "drop it", not the recipe
# for another value (review stop 61: groups=1 named g layers, dilation=1 "no layer here",
# padding_mode='zeros' an F.pad recipe)
LC_DEFAULTS = {"dilation": 1, "groups": 1, "padding_mode": "zeros", "activation": None}

LC_FOREIGN_NAMES = {
    # torch.nn.Conv2d
    "dilation": "dilated windows are not provided (each position's filter reads a "
    "contiguous kernel_size window); for a dilated conv's untied twin there is no layer here",
    "groups": "grouped windows are not provided (every output channel reads every input "
    "channel); for groups=g build g layers LocallyConnected2d(C_in // g, C_out // g, ...) "
    "and torch.cat their outputs over x.chunk(g, dim=1), dim=1",
    "padding_mode": "only zero padding: pad yourself with F.pad(x, (p, p, p, p), "
    "mode='reflect' or 'circular' or 'replicate') and build the layer with padding=0 and "
    "input_size=(H + 2p, W + 2p)",
    # Keras LocallyConnected2D
    "filters": "Keras' filters is out_channels here (the 2nd argument)",
    "strides": "Keras' strides is stride= here",
    "use_bias": "Keras' use_bias is bias= here",
    "data_format": "inputs are channels-first (B, C, H, W) as nn.Conv2d's: drop data_format= "
    "and pass a channels-last (B, H, W, C) batch as x.permute(0, 3, 1, 2)",
    "activation": "the layer is linear, as nn.Conv2d: apply the activation to its output",
    "implementation": "Keras' implementation modes compute the same function: drop it",
}
