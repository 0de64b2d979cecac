"""Devices, streams and where an op runs when the call does not say.

Host memory (numpy, torch CPU tensors) runs on the default device: kport's best device by its
policy (``KPORT_BACKEND``, ``KPORT_DEVICE``; the CPU backend on a machine without a GPU), or the
one given to ``set_default_device``. Device memory runs on the kport device of that memory
(torch ``cuda:1`` -> the cuda backend's device 1), on the framework's current stream.
"""

import sys

from . import _ext

_ext.init()

KDL_CPU, KDL_CUDA, KDL_OPENCL, KDL_ROCM = 1, 2, 4, 10
_BACKEND_OF_DLPACK = {KDL_CUDA: "cuda", KDL_ROCM: "hip"}
CU_STREAM_LEGACY = 0x1  # the CUstream handle of the legacy default stream (torch reports it as 0)

_devices = {}  # global index -> Device (each opened once)
_by_backend = {}  # (backend, backend_device) -> global index
_streams = {}  # (global index, native stream) -> Stream wrapping a framework's stream
_default = None


def version():
    """kp_version(): "0.1.0 (abi 1)"."""
    return _ext.version()


def backends():
    """Every backend kport knows: name, available, reason (why not), device_count, path."""
    return _ext.backends()


def devices():
    """Every usable device: index, name, vendor, backend, arch, kind, memory_bytes, caps, ..."""
    return _ext.devices()


def _opened(dev):
    return _devices.setdefault(dev.index, dev)


def device(index=-1):
    """A kport Device: ``device()`` the default one, ``device(i)`` global device i,
    ``device("opencl")`` the first device of that backend."""
    if isinstance(index, _ext.Device):
        return index
    if isinstance(index, str):
        for info in devices():
            if info["backend"] == index:
                return device(info["index"])
        names = ", ".join(f"{b['name']} ({b['reason'] or 'no devices'})" for b in backends()) or "none"
        raise ValueError(f"kport: no device of backend {index!r}; backends: {names}")
    if index == -1:
        return default_device()
    if index in _devices:
        return _devices[index]
    return _opened(_ext.Device(index))


def default_device():
    """The device host memory runs on when a call names none."""
    global _default
    if _default is None:
        set_default_device(_opened(_ext.Device(-1)))
    return _default


def set_default_device(dev):
    """Makes ``dev`` (a Device, a global index or a backend name) the default device."""
    global _default
    _default = device(dev)
    _configure()
    return _default


def _backend_device(backend, backend_device):
    key = (backend, backend_device)
    if key not in _by_backend:
        for info in devices():
            if info["backend"] == backend and info["backend_device"] == backend_device:
                _by_backend[key] = info["index"]
                break
        else:
            raise _ext.Error(f"KP_ERR_UNAVAILABLE: no kport {backend} device {backend_device} "
                             f"(kport.backends() says why)")
    return device(_by_backend[key])


def _current_stream(obj, dl_id):
    """The framework's current stream on that device, as a native handle (0: none known)."""
    module = type(obj).__module__
    if module.startswith("torch"):
        import torch

        return torch.cuda.current_stream(dl_id).cuda_stream
    if module.startswith("cupy"):
        import cupy

        return cupy.cuda.get_current_stream().ptr
    return 0


def wrapped_stream(dev, native):
    """The Stream running kport's work on a framework's stream (cached: one per native stream)."""
    key = (dev.index, native)
    s = _streams.get(key)
    if s is None:
        s = _streams[key] = dev.wrap_stream(native)
    return s


def _resolve(dl_type, dl_id, obj):
    backend = _BACKEND_OF_DLPACK.get(dl_type)
    if backend is None:
        raise _ext.Error(f"KP_ERR_DEVICE_MISMATCH: no kport backend takes DLPack device type {dl_type} "
                         f"without device=; pass device= or host memory")
    dev = _backend_device(backend, dl_id)
    native = _current_stream(obj, dl_id)
    if native == 0 and backend == "cuda":
        native = CU_STREAM_LEGACY
    return wrapped_stream(dev, native) if native else dev


def _exporters():
    """Faster DLPack exporters for types whose __dlpack__ is slow (torch's is Python code)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    return ((torch.Tensor, torch.utils.dlpack.to_dlpack),)


def _configure():
    _ext.configure(_default, _resolve, _exporters())


def target(dev=None, stream=None):
    """What an op call passes to the extension: a Stream, a Device, or None (decided there)."""
    if stream is not None:
        return stream
    if dev is not None:
        return device(dev)
    if _default is None:
        default_device()
    return None
