"""What `facerec serve` hands to each worker process: the service's own options (the engine's settings travel
as the usual FACEREC_* variables, read by facerec.config).

uvicorn starts workers as fresh processes that import the app by name, so the options go through one
environment variable, `FACEREC_SERVE_OPTIONS` (JSON), written by `facerec serve` and read here only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

OPTIONS_VARIABLE = "FACEREC_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServiceOptions:
    gallery: str = "default"  # the name API keys are scoped to
    max_body_bytes: int = 10 * 1024 * 1024  # larger requests: 413 before anything is decoded
    rate_per_second: float = 20.0  # per API key and worker process (token bucket)
    burst: int = 40
    failed_auth_burst: int = 30  # refused keys per client address before it is refused outright (per worker)
    failed_auth_per_minute: float = 10.0  # how fast that allowance comes back
    concurrency: int = 2  # images analysed at once per worker (memory and CPU bound)
    max_top_k: int = 20
    max_images: int = 10  # photos per enrollment request

    def to_env(self) -> dict[str, str]:
        return {OPTIONS_VARIABLE: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> "ServiceOptions":
        raw = os.environ.get(OPTIONS_VARIABLE)
        return cls(**json.loads(raw)) if raw else cls()
