"""Process-wide torch settings, applied once before the first model loads.

Why one thread by default: on a small shared CPU, torch's OpenMP workers spin against each other and any
other busy process; measured here (2 cores, one other busy process) MTCNN on a 176-px photo took 22 ms
with 1 thread and 1.5 s with 2. Batch work scales better across processes than across threads.
`FACEREC_TORCH_THREADS` overrides.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_configured = False


def configure_torch() -> None:
    global _configured
    with _lock:
        if _configured:
            return
        import torch

        threads = os.environ.get("FACEREC_TORCH_THREADS", "1")
        try:
            torch.set_num_threads(max(1, int(threads)))
        except ValueError:
            pass
        _configured = True
