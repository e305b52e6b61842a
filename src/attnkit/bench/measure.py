"""Timing and peak-memory measurement, each case in its own fresh worker process.

The parent side (:func:`run_in_worker`) starts ``python -m attnkit.bench._worker``,
hands it a JSON payload on stdin and reads one JSON result line back. The worker
side (:func:`measure`) times a prepared forward and forward+backward and records
the peak memory above the baseline taken right after the inputs were created:

* CPU (Linux): the resident-set high-water mark ``VmHWM`` from
  ``/proc/self/status``, reset at the start of each phase by writing ``5`` to
  ``/proc/self/clear_refs``, minus the RSS at the baseline (``/proc/self/statm``).
  ``ru_maxrss`` is only a fallback: after ``fork + exec`` Linux carries the
  parent's high-water mark into the child's ``ru_maxrss``, and it cannot be reset.
* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
  minus ``memory_allocated`` at the baseline.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

RESULT_MARKER = "ATTNKIT_BENCH_RESULT "
WORKER_MODULE = "attnkit.bench._worker"


@dataclass(frozen=True)
class Timing:
    """How long to time: ``warmup`` untimed runs, then repeats until ``min_time``
    seconds have been spent or ``max_repeats`` runs were made (at least one)."""

    min_time: float = 1.0
    max_repeats: int = 5
    warmup: int = 1


@dataclass
class Prepared:
    """A ready-to-run case: ``fn(*inputs)`` returns the output that ``grad_output`` matches.

    ``params`` are module parameters whose gradients the backward pass computes
    along with those of the inputs.
    """

    fn: Callable[..., Tensor]
    inputs: tuple[Tensor, ...]
    grad_output: Tensor
    params: tuple[Tensor, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- memory


def _status_kib(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    """Resident set size now, from ``/proc/self/statm`` (falls back to ``ru_maxrss``)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _ru_maxrss_bytes()


def _ru_maxrss_bytes() -> int:
    """``ru_maxrss`` in bytes (KiB on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class MemoryProbe:
    """Peak memory above a baseline, per phase, on CPU or CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device  # the CUDA calls below name it: cuda:1 is not the current one
        self.resettable = True
        self.baseline = 0

    @property
    def method(self) -> str:
        """How the peak is measured (recorded with every result)."""
        if self.cuda:
            return "cuda_max_memory_allocated"
        return "rss_vmhwm" if self.resettable else "ru_maxrss"

    def set_baseline(self) -> None:
        """Record current usage; peaks are reported relative to it."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = current_rss_bytes()

    def start_phase(self) -> None:
        """Forget earlier peaks (where the platform allows it)."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.resettable = _reset_rss_peak()

    def peak(self) -> int:
        """Peak usage since :meth:`start_phase`, minus the baseline, in bytes."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.resettable:
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _ru_maxrss_bytes()
        return max(0, peak - self.baseline)


# --------------------------------------------------------------------------- timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_runs(run: Callable[[], object], sync: Callable[[], None], timing: Timing) -> list[float]:
    """Seconds per call of ``run`` after ``timing.warmup`` untimed calls."""
    for _ in range(timing.warmup):
        run()
        sync()
    times: list[float] = []
    while True:
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
        if len(times) >= timing.max_repeats or sum(times) >= timing.min_time:
            return times


def _forward_runner(prepared: Prepared) -> Callable[[], None]:
    """Plain forward call with inputs that do not require grad."""

    def run() -> None:
        prepared.fn(*prepared.inputs)

    return run


def _forward_backward_runner(prepared: Prepared) -> Callable[[], None]:
    """Forward with inputs requiring grad, then gradients of inputs and params."""
    inputs = tuple(t.detach().requires_grad_() for t in prepared.inputs)
    wrt = inputs + tuple(p for p in prepared.params if p.requires_grad)

    def run() -> None:
        out = prepared.fn(*inputs)
        torch.autograd.grad(out, wrt, prepared.grad_output)

    return run


def warm_runtime(prepared: Prepared) -> None:
    """One forward and one forward+backward, to be run on a tiny case before the
    baseline so one-time set-up (thread pools, the autograd engine, lazily loaded
    kernels) is not counted as the measured case's memory."""
    _forward_runner(prepared)()
    _forward_backward_runner(prepared)()


def _phase(name: str, run: Callable[[], None], probe: MemoryProbe, timing: Timing, device) -> dict:
    """Time one phase (``fwd`` or ``fwd_bwd``) and record its peak memory."""
    probe.start_phase()
    times = time_runs(run, synchronizer(device), timing)
    peak_key = "peak_mem_bytes" if name == "fwd_bwd" else f"{name}_peak_mem_bytes"
    return {
        f"{name}_s": statistics.median(times),
        f"{name}_min_s": min(times),
        f"{name}_times_s": times,
        f"{name}_repeats": len(times),
        peak_key: probe.peak(),
    }


def measure(prepared: Prepared, device: torch.device, timing: Timing) -> dict:
    """Forward and forward+backward median time and peak memory of ``prepared``.

    Call right after creating the inputs: the memory baseline is taken here.
    """
    probe = MemoryProbe(device)
    probe.set_baseline()
    fwd = _phase("fwd", _forward_runner(prepared), probe, timing, device)
    fwd_bwd = _phase("fwd_bwd", _forward_backward_runner(prepared), probe, timing, device)
    return {
        **fwd,
        **fwd_bwd,
        "baseline_mem_bytes": probe.baseline,
        "mem_method": probe.method,
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- parent side


def _worker_env() -> dict[str, str]:
    """Environment for the worker: the parent's, with this attnkit first on the path."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _failure(message: str) -> dict:
    return {"status": "error", "message": message}


def _parse_worker_output(proc: subprocess.CompletedProcess) -> dict:
    """The worker's result line, or an error record explaining why there is none."""
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    if proc.returncode < 0:
        reason = f"worker killed by signal {-proc.returncode}"
        if proc.returncode == -9:
            reason += " (out of memory?)"
    else:
        reason = f"worker exited with code {proc.returncode} without a result"
    return _failure(f"{reason}: {tail}" if tail else reason)


def run_in_worker(payload: dict, timeout: float | None = None) -> dict:
    """Run one case in a fresh ``python -m attnkit.bench._worker`` process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_worker_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _failure(f"worker timed out after {timeout:g} s")
    return _parse_worker_output(proc)
