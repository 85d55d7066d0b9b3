"""int8 weights for the transformers backend on CPU: torchao quantises, ``torch._int_mm`` multiplies.

torchao (the maintained successor of torch's deprecated eager quantisation) picks
the int8 weights: one scale per output channel, symmetric. Its own CPU linear is not
what runs, though. In torchao 0.18 on an x86 CPU build the eager int8 linear either
casts the int8 weight back to float on every call (weight-only: slower than fp32)
or sums the weight's columns again on every call (dynamic activations), and the
wheel ships no CPU kernels. So each quantised linear layer here quantises its input
per token to int8 (symmetric, absmax) and runs ``torch._int_mm`` against the int8
weight, laid out once as ``(in, out)``. That is 5-10x faster than the fp32 matmul on
the decode shapes of SmolLM2 (AVX512-VNNI, one thread).

Quantising activations per token loses the channels that carry outliers, so the
layers are smoothed first (SmoothQuant, Xiao et al. 2023): a forward pass over a short
calibration text (``int8_calibration.txt``: chat turns, SQL, a shop page, code) records
each input channel's absmax ``a_j``; with ``s_j = a_j**alpha / w_j**(1 - alpha)``
(``w_j`` the weight column's absmax, ``alpha`` 0.5) the layer multiplies its input by
``1 / s`` and quantises ``W * s``, which moves the outliers' range into the weights.

torchao's import logs a few lines about GPU kernels it cannot load on a CPU build and
about torch's pytree registry; transformers imports it on every model load once it is
installed, so :func:`quiet_torchao` imports it first with those loggers held at ERROR.
"""

from __future__ import annotations

import importlib.util
import logging
import types
from typing import Any

from agentloop.errors import AgentloopError, MissingExtraError

__all__ = ["quantize_int8", "quiet_torchao"]

_NOISY = ("torchao", "torch.utils._pytree")


def quiet_torchao() -> bool:
    """Import torchao (if installed) without its load-time log lines; return whether it is installed."""
    if importlib.util.find_spec("torchao") is None:
        return False
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao.quantization  # noqa: F401
        import transformers.quantizers.auto  # noqa: F401 - imports the rest of torchao it uses
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return True


CALIBRATION_FILE = "int8_calibration.txt"
SMOOTH_ALPHA = 0.5


def calibration_ids(tokenizer: Any, max_tokens: int = 1024) -> Any:
    """The shipped calibration text as token ids ``(1, T)``: what :func:`quantize_int8` smooths by."""
    from importlib.resources import files

    text = files("agentloop.backends").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
    return tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens]


def quantize_int8(model: Any, calibration: Any = None, *, alpha: float = SMOOTH_ALPHA) -> int:
    """Give every linear layer of ``model`` int8 weights, in place; return how many were quantised.

    ``calibration`` (token ids, ``(1, T)``) turns on SmoothQuant smoothing with
    ``alpha``: one forward pass over it in float records each layer's input ranges.
    Layers whose sizes ``torch._int_mm`` cannot take (not multiples of 8) stay in float.
    """
    if not quiet_torchao():
        raise MissingExtraError("torchao", "int8")
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    def fits(module: Any, fqn: str) -> bool:
        return (
            isinstance(module, torch.nn.Linear)
            and module.in_features % 8 == 0
            and module.out_features % 8 == 0
        )

    wanted = sum(1 for m in model.modules() if fits(m, ""))
    ranges = _input_ranges(model, calibration, fits) if calibration is not None else {}
    smooth: dict[Any, Any] = {}
    for module, a in ranges.items():
        w = module.weight.detach().abs().amax(dim=0)  # per input channel
        s = (a.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        # A new tensor, not in place: the LM head's weight may be tied to the embeddings.
        module.weight = torch.nn.Parameter(module.weight.detach() * s, requires_grad=False)
        smooth[module] = (1.0 / s).reshape(1, -1).to(torch.float32)
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=fits)
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and hasattr(weight, "qdata"):
            _use_int_mm(module, smooth.get(module))
            count += 1
    if count != wanted:  # another torchao layout: better an error than silently float weights
        raise AgentloopError(
            f"torchao quantised {count} of {wanted} linear layers into the layout this backend reads; "
            "install torchao>=0.18 (pip install 'agentloop[int8]')"
        )
    return count


def _input_ranges(model: Any, ids: Any, fits: Any) -> dict[Any, Any]:
    """Each quantisable layer's per-input-channel absmax over one float forward of ``ids``."""
    import torch

    ranges: dict[Any, Any] = {}

    def record(module: Any, args: Any, _out: Any) -> None:
        x = args[0].detach()
        a = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
        ranges[module] = torch.maximum(ranges[module], a) if module in ranges else a

    hooks = [m.register_forward_hook(record) for m in model.modules() if fits(m, "")]
    try:
        with torch.no_grad():
            model(ids.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return ranges


def _use_int_mm(linear: Any, in_scale: Any = None) -> None:
    import torch

    weight = linear.weight
    qdata, scale = weight.qdata, weight.scale
    linear.w_int8 = qdata.t().contiguous()  # (in, out): _int_mm's layout
    linear.w_scale = scale.reshape(1, -1).to(torch.float32)  # one per output channel
    linear.in_scale = in_scale  # SmoothQuant's 1/s per input channel, or None
    # The float weight goes; the layer keeps only its int8 copy and scales.
    del linear.weight
    linear.register_parameter("weight", None)
    linear.forward = types.MethodType(_int8_forward, linear)


def _int8_forward(self: Any, x: Any) -> Any:
    import torch

    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()
    if self.in_scale is not None:
        x2 = x2 * self.in_scale
    # Per-token symmetric scale: each row's absmax maps to 127.
    x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12) / 127.0
    xq = torch.round(x2 / x_scale).to(torch.int8)
    y = torch._int_mm(xq, self.w_int8).float() * x_scale * self.w_scale
    if self.bias is not None:
        y = y + self.bias
    return y.to(x.dtype).reshape(*shape[:-1], y.shape[-1])
