"""The torch device a GPU step runs on (torch is imported here, not in devices.py, which the
CPU-only steps read too)."""

from __future__ import annotations

from notallbits import UserError
from notallbits.generation.devices import visible_gpu_count


def resolve_device(device: str) -> str:
    """The torch device a GPU step runs on. ``auto`` is cuda when the machine has GPUs (counted
    without CUDA: visible_gpu_count) and cpu when it has none; GPUs that torch cannot use (a CPU build
    of torch, a driver too old for its CUDA) stop the job instead of silently running on CPU."""
    import torch

    if device == "cpu":
        return device
    gpus = visible_gpu_count()
    if device == "auto" and gpus == 0:
        return "cpu"
    if not torch.cuda.is_available():
        where = f"this machine shows {gpus} GPU(s)" if gpus else f"device is {device}"
        raise UserError(f"{where} but torch {torch.__version__} cannot use CUDA (a CPU build, or a driver older "
                        f"than its CUDA {torch.version.cuda}): install a CUDA build of torch, or set "
                        "generation.device: cpu to run on CPU on purpose")
    return "cuda" if device == "auto" else device


# GPTQ kernels that install from wheels: Triton kernels are JIT-compiled by the triton package
# that comes with torch's CUDA wheels (no nvcc). GPTQModel's own first choice on CUDA, Marlin
# (and Machete, ExLlamaV2), is compiled with nvcc >= 12.8 at first use.
GPTQ_KERNELS = ("gptq_triton", "gptq_torch", "gptq_marlin", "gptq_exllama_v2", "auto")
