"""Process-wide torch settings, applied once before the first model loads.

Why one thread by default: on a small shared CPU, torch's OpenMP workers spin against each other and any
other busy process; measured here (2 cores, one other busy process) MTCNN on a 176-px photo took 22 ms
with 1 thread and 1.5 s with 2. Batch work scales better across processes than across threads.
`FACEREC_TORCH_THREADS` (read by facerec.config.Settings) overrides; the first engine to load a model sets it
for the process, as torch's thread pool is process-wide.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_configured = False


def configure_torch(threads: int = 1) -> None:
    global _configured
    with _lock:
        if _configured:
            return
        import torch

        torch.set_num_threads(max(1, int(threads)))
        _configured = True
