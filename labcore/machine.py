"""What this process runs on: the device to train on, how to describe it, CPU threads, and whether to draw
progress bars. A leaf module (torch only), so that training, the store, calibration and provenance all ask
the same questions the same way without importing each other.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; or exactly the device named."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), e.g. 'AMD EPYC 7B13'; else platform's guess."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device | str) -> str:
    """Human-readable device, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: 2 threads of 2, AMD EPYC 7B13'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"{device.type}: {n} thread{'s' if n != 1 else ''} of {os.cpu_count()}, {cpu_model()}"


def flush_denormals(device: torch.device) -> None:
    """On CPUs, treat subnormal floats as zero.

    Deep plain networks' vanishing activations and gradients become subnormal floats, which x86 CPUs
    process tens of times slower (smoke runs took 153 s instead of 13 s); flushing them changes nothing above 1e-38.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` CPU threads (a Ray task's share) instead of this process's; None changes nothing."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def show_progress() -> bool:
    """Progress bars in interactive sessions only (a terminal, or JupyterLab's widgets); headless runs (reports,
    tests, CI) and output redirected to a log file keep logs quiet."""
    if os.environ.get("LABCORE_HEADLESS") or os.environ.get("CI"):
        return False
    if "ipykernel" in sys.modules:  # a notebook kernel: tqdm.auto draws widgets, whatever stderr is
        return True
    return sys.stderr.isatty()


def configure(device: torch.device, deterministic: bool = False) -> None:
    """Set this process's numeric settings for training on `device`, and keep them stated (see `numerics`).

    By default a GPU runs fast: cuDNN picks the fastest kernels for each shape (benchmark mode, which may differ
    from one execution to the next) and float32 matrix products use TF32. `deterministic` trades that speed for
    repeatable runs: deterministic algorithms where PyTorch has them, no benchmark mode, no TF32. Where it has
    none (on CUDA: the backward pass of adaptive average pooling, which most of these networks end with) PyTorch
    warns instead of stopping the run, and that operation may still vary in its last bits. cuBLAS reads
    CUBLAS_WORKSPACE_CONFIG when a process first uses it: `deterministic_process` sets it at the start.
    """
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    fast_gpu = device.type == "cuda" and not deterministic
    torch.backends.cudnn.benchmark = fast_gpu
    torch.backends.cuda.matmul.allow_tf32 = fast_gpu
    torch.backends.cudnn.allow_tf32 = fast_gpu


def deterministic_process() -> None:
    """Call first thing in a process that trains with `configure(..., deterministic=True)`: cuBLAS reads this
    setting once, when the process first uses it, and is deterministic only with it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` computes bfloat16 natively, why in a few words): a CUDA GPU that supports it, or a CPU
    with AMX or AVX512-BF16 (oneDNN's bf16 kernels; elsewhere PyTorch emulates bf16, slower than fp32)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bfloat16"
    if device.type != "cpu":
        return False, f"{device.type}: bfloat16 autocast not used there"
    found = [name for name, has in (("AMX", torch.cpu._is_amx_tile_supported()),
                                    ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported())) if has]
    if found:
        return True, f"this CPU has {' and '.join(found)}"
    return False, "this CPU has neither AMX nor AVX512-BF16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run of train.precision `precision` trains in on `device`: 'auto' becomes 'bf16' where the
    device computes bfloat16 natively (`native_bf16`), else 'fp32'; 'fp32' and 'bf16' stay as they are."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device)[0] else "fp32"


def numerics(device: torch.device, precision: str = "fp32") -> dict[str, object]:
    """The numeric settings a run on `device` trains with (`precision`: as resolved, 'fp32' or 'bf16'), as
    recorded with the run and its reports."""
    cuda = device.type == "cuda"
    return {"device": device.type, "precision": precision, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
            "tf32_matmul": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(cuda and torch.backends.cudnn.allow_tf32),
            "flush_denormal": device.type == "cpu"}  # flush_denormals: subnormals are zero on CPUs


def share_gpu(fraction: float) -> float | None:
    """Cap this process's share of GPU memory at `fraction` (a Ray task given 0.25 of a GPU: at most a quarter of
    its memory), so that one run cannot starve the runs beside it; going over raises out-of-memory in this run
    alone, which is then retried with the GPU to itself. Returns the cap set, or None (a whole GPU, or none)."""
    if not 0 < fraction < 1 or not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, 0)  # cuda:0: the task's only visible GPU under Ray
    return fraction
