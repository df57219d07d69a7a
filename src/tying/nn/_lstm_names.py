"""``nn.LSTM``'s keywords, refused by :class:`TiedGateLSTM` with what to use here (stop 60).

``TiedGateLSTM(3, 5, num_layers=2)``, ``bidirectional=True``, ``bias=False`` or
``dropout=0.1`` (a model ported from ``nn.LSTM``) got Python's bare "unexpected keyword
argument", and ``TiedGateLSTM(3, 5, 2)`` (``nn.LSTM``'s third positional is
``num_layers``) "takes 3 positional arguments but 4 were given": neither said that the
layer is one layer in one direction, nor how to build the others.
"""

from __future__ import annotations

from tying.nn._args import refuse_foreign_defaults

__all__ = ["refuse_lstm_keywords", "refuse_lstm_positionals"]

_NAMES = {
    "num_layers": "TiedGateLSTM is one layer: stack layers yourself, each reading the "
    "previous one's output (y = second(first(x)[0])[0]); drop num_layers=",
    "bidirectional": "TiedGateLSTM runs one direction: a second layer on the time-reversed "
    "input gives the other, torch.cat([fwd(x)[0], bwd(x.flip(1))[0].flip(1)], -1) "
    "(flip(0) time-first), nn.LSTM(bidirectional=True)'s output for unpadded sequences",
    "bias": "the gates always have a bias here; for nn.LSTM's bias=False zero and freeze "
    "it: layer.bias.data.zero_(); layer.bias.requires_grad_(False)",
    "dropout": "nn.LSTM's dropout= acts between stacked layers only and this is one "
    "layer: put nn.Dropout between your layers",
    "proj_size": "projected LSTMs are not provided (nn.LSTM feeds the projected h back "
    "into the recurrence)",
    "device": "build the layer, then move it: TiedGateLSTM(...).to(device)",
    "dtype": "build the layer, then cast it: TiedGateLSTM(...).to(dtype)",
}

# nn.LSTM's defaults: one layer, one direction, with a bias, as this layer is (a port
# written out in full, bias=True, was advised to zero its bias)
_DEFAULTS = {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False, "proj_size": 0}


def refuse_lstm_keywords(given: dict) -> None:
    """Refuse ``nn.LSTM``'s keywords by name (any other: Python's message).

    Raises:
        TypeError: whenever ``given`` is not empty.
    """
    refuse_foreign_defaults("TiedGateLSTM", given, _NAMES, _DEFAULTS, "nn.LSTM")


def refuse_lstm_positionals(extra: tuple) -> None:
    """Refuse ``nn.LSTM``'s positionals after ``hidden_size`` (``num_layers``, ``bias``,
    ``batch_first``, ...), naming them.

    Raises:
        TypeError: whenever ``extra`` is not empty.
    """
    order = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")
    named = ", ".join(f"{k}={v!r}" for k, v in zip(order, extra, strict=False))
    raise TypeError(
        f"TiedGateLSTM() takes 2 positional arguments (input_size, hidden_size) but "
        f"{2 + len(extra)} were given, nn.LSTM's {named}; the others are keyword-only "
        f"here (tie_gates=, batch_first=): pass them by keyword (nn.LSTM's other "
        f"keywords are refused naming what to do instead)"
    )
