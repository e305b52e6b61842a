"""Worker process: ``python -m attnkit.bench._worker`` runs one benchmark case.

Reads a JSON payload on stdin::

    {"suite": "attention", "impl": "naive", "case": {...}, "timing": {...},
     "threads": null, "seed": 0}

warms the runtime up on a tiny version of the case (so one-time set-up is not
counted), builds the case with ``attnkit.bench.<suite>.prepare(impl, case)``, measures it
with :func:`attnkit.bench.measure.measure` and prints one line
``ATTNKIT_BENCH_RESULT {json}`` on stdout. A suite with its own
``run_worker(payload) -> record`` (``train``) does all of this itself. Failures become
``{"status": "error", "message": ...}`` results rather than tracebacks.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys

import torch

from attnkit.bench.measure import RESULT_MARKER, Timing, measure, warm_runtime

WARM_SEQ_LEN = 16


def run_payload(payload: dict) -> dict:
    """Build and measure the case described by ``payload``; never raises."""
    try:
        if payload.get("threads"):
            torch.set_num_threads(int(payload["threads"]))
        torch.manual_seed(int(payload.get("seed", 0)))
        suite = importlib.import_module(f"attnkit.bench.{payload['suite']}")
        if hasattr(suite, "run_worker"):  # a suite that measures itself (e.g. train)
            return suite.run_worker(payload)
        tiny = {**payload["case"], "seq_len": min(WARM_SEQ_LEN, payload["case"]["seq_len"])}
        warm_runtime(suite.prepare(payload["impl"], tiny))
        gc.collect()
        prepared = suite.prepare(payload["impl"], payload["case"])
        device = torch.device(payload["case"]["device"])
        result = measure(prepared, device, Timing(**payload["timing"]))
    except torch.OutOfMemoryError as exc:
        return {"status": "error", "message": f"out of memory: {str(exc).splitlines()[0]}"}
    except Exception as exc:
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "message": "", **result}


def main() -> int:
    """Entry point: payload on stdin, result line on stdout."""
    result = run_payload(json.loads(sys.stdin.read()))
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
