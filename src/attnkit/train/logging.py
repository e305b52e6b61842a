"""Run logs: a JSONL file of every metric, optional TensorBoard, a progress bar and
the loss-curve plot written at the end of a run."""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = [
    "METRICS_FILE",
    "PLOT_FILE",
    "MetricsLogger",
    "ProgressBar",
    "peak_memory_mb",
    "plot_loss_curve",
    "read_metrics",
]

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def _json_value(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, inf) as strings; tensors as numbers; recursively."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return value


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory of ``device``, else the process's peak resident set (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class MetricsLogger:
    """Appends one JSON object per line to ``<output_dir>/metrics.jsonl``.

    Every record has ``kind`` (``"train"``, ``"eval"`` or ``"event"``),
    ``step`` and ``time``. With ``tensorboard=True`` numeric values also go to
    ``<output_dir>/tensorboard`` as ``<kind>/<name>``. A disabled logger (no
    directory, or not the main process) does nothing. Non-finite floats are
    written as strings (``"nan"``, ``"inf"``) and scalar tensors as numbers.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from attnkit.train import MetricsLogger, read_metrics
        >>> logger = MetricsLogger(tempfile.mkdtemp())
        >>> logger.log("train", 10, {"loss": torch.tensor(2.5), "lr": 1e-3})
        >>> logger.log("eval", 10, {"val_loss": float("nan")})
        >>> logger.close()
        >>> for record in read_metrics(logger.path):
        ...     print(record["kind"], record["step"], record.get("loss"), record.get("val_loss"))
        train 10 2.5 None
        eval 10 None nan
        >>> MetricsLogger(None).enabled  # no directory: logs nothing
        False
    """

    def __init__(
        self, output_dir: str | Path | None, *, tensorboard: bool = False, enabled: bool = True
    ) -> None:
        self.enabled = enabled and output_dir is not None
        self.path = Path(output_dir) / METRICS_FILE if output_dir is not None else None
        self._writer = None
        if self.enabled and tensorboard:
            self._writer = _tensorboard_writer(Path(output_dir) / "tensorboard")

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Write one record."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": time.time()}
        record.update({key: _json_value(value) for key, value in values.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "time") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def truncate_after(self, step: int) -> None:
        """Drop records after ``step`` (written by a run that is being resumed from ``step``)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            "TrainConfig(tensorboard=True) needs the tensorboard package "
            f"(pip install tensorboard); importing it failed: {error}"
        ) from error
    return SummaryWriter(log_dir=str(log_dir))


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file (only ``kind`` ones if given), in file order.

    Example:
        >>> import json
        >>> import tempfile
        >>> from pathlib import Path
        >>> from attnkit.train import read_metrics
        >>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> with path.open("w") as handle:
        ...     for step, loss in ((10, 3.1), (20, 2.4)):
        ...         print(json.dumps({"kind": "train", "step": step, "loss": loss}), file=handle)
        ...     print(json.dumps({"kind": "eval", "step": 20, "val_loss": 2.6}), file=handle)
        >>> len(read_metrics(path)), [r["loss"] for r in read_metrics(path, kind="train")]
        (3, [3.1, 2.4])
    """
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if kind is None or record.get("kind") == kind:
                records.append(record)
    return records


def _numeric(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [step for step, _ in points], [value for _, value in points]


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Plot training loss (and eval metrics whose name contains ``loss``) against step.

    Args:
        metrics_path: a ``metrics.jsonl`` written by :class:`MetricsLogger`.
        out_path: the image to write (format from its suffix, e.g. ``.png``).

    Returns:
        ``out_path`` as a ``Path``.

    Example:
        >>> import tempfile
        >>> from attnkit.train import MetricsLogger, plot_loss_curve
        >>> run = tempfile.mkdtemp()
        >>> logger = MetricsLogger(run)
        >>> for step, loss in ((10, 3.0), (20, 2.2), (30, 1.9)):
        ...     logger.log("train", step, {"loss": loss})
        >>> logger.log("eval", 30, {"val_loss": 2.1})
        >>> image = plot_loss_curve(logger.path, f"{run}/loss.png")
        >>> image.name, image.read_bytes()[1:4]
        ('loss.png', b'PNG')
    """
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(*_numeric(train, "loss"), label="train loss")
    eval_keys = sorted({key for r in evals for key in r if "loss" in key})
    for key in eval_keys:
        axes.plot(*_numeric(evals, key), marker="o", label=f"eval {key}")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)
    return out_path


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, learning rate and tokens/s."""

    def __init__(self, total: int | None, initial: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, loss: float, lr: float, tokens_per_s: float | None) -> None:
        postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
        if tokens_per_s is not None:
            postfix["tok/s"] = f"{tokens_per_s:,.0f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
