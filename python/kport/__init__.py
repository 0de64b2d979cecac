"""kport: attention and mixture-of-experts kernels for CUDA, HIP, OpenCL and the CPU, from Python.

Every op takes tensors from any framework that speaks DLPack (numpy, PyTorch on CPU, CUDA or
ROCm, CuPy) without copying them when the device can address their memory, and writes its
outputs into the tensors given (``out=``) or into new ones of the inputs' framework.

    import numpy as np, kport
    logits = np.random.default_rng(0).standard_normal((4, 16), dtype=np.float32)
    ids, weights = kport.moe_gate(logits, topk=2)

Errors are ``kport.Error`` with ``.status`` (``"KP_ERR_INVALID_SHAPE"``) and ``.message``
(the C library's ``kp_last_error()``); a call that fails writes nothing. ``kport.torch``
registers the ops with ``torch.library`` (fake implementations included) for ``torch.compile``.
"""

from . import _ext
from ._ext import Device, Error, Stream
from ._ops import (
    DEEPSEEK_V3_ROUTING,
    attention_decode,
    attention_prefill,
    grouped_gemm,
    mla_decode,
    moe_align,
    moe_combine,
    moe_forward,
    moe_gate,
    op_kernel,
)
from ._targets import backends, default_device, device, devices, set_default_device, version

__all__ = [
    "DEEPSEEK_V3_ROUTING", "Device", "Error", "Stream", "attention_decode", "attention_prefill",
    "backends", "default_device", "device", "devices", "grouped_gemm", "mla_decode", "moe_align",
    "moe_combine", "moe_forward", "moe_gate", "op_kernel", "set_default_device", "version",
]
__version__ = _ext.version().split(" ")[0]
