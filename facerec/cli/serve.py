"""`facerec serve`: the HTTP service (needs the `service` extra), and `facerec serve keys ...` for its API keys.

The database and model come from the usual global options / FACEREC_* variables (never from requests);
each uvicorn worker process builds its own engine and index from them.
"""

from __future__ import annotations

import importlib
import json
import os
from datetime import timedelta
from typing import Annotated, Optional

import typer

serve_app = typer.Typer(
    help="Run the HTTP service (FastAPI + uvicorn, from the `service` extra), manage its API keys.",
    invoke_without_command=True,
)
keys_app = typer.Typer(help="API keys of the HTTP service: stored hashed in the database, shown once.")
serve_app.add_typer(keys_app, name="keys")


def _main():
    """The shared CLI helpers (imported late: facerec.cli.main imports this module)."""
    return importlib.import_module("facerec.cli.main")


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads the model once).")] = 1,
    gallery: Annotated[str, typer.Option(help="This gallery's name, which API keys are scoped to.")] = "default",
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body accepted.")] = 10.0,
    rate: Annotated[float, typer.Option(min=0.01, help="Requests per second per API key and worker.")] = 20.0,
    burst: Annotated[int, typer.Option(min=1, help="Requests at once per API key and worker.")] = 40,
    concurrency: Annotated[int, typer.Option(min=1, help="Images analysed at once per worker.")] = 2,
    auth_failures: Annotated[int, typer.Option(min=1, help="Refused API keys per client address (and worker) before that address is refused for a while (10 a minute come back).")] = 30,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the gallery over HTTP: native /v1 routes, CompreFace and DeepStack-shaped routes, /docs."""
    if ctx.invoked_subcommand is not None:
        return
    main = _main()
    with main._command(False):
        try:
            import uvicorn

            from facerec.service.config import ServiceOptions
        except ImportError as exc:
            raise main.UsageError(f"the HTTP service needs its extra: pip install 'facerec[service]' ({exc})")
        engine = main._engine()
        settings = engine.settings  # its model resolved: every worker runs the database's model
        keys = engine.keys.list()  # fails here, clearly, when the database is unreachable or not migrated
        if not keys:
            main.err.print("warning: no API keys yet: every request will be refused until one is created with "
                           "`facerec serve keys create`", markup=False)
        options = ServiceOptions(gallery=gallery, max_body_bytes=int(max_body_mb * 1024 * 1024),
                                 rate_per_second=rate, burst=burst, concurrency=concurrency,
                                 failed_auth_burst=auth_failures)
        os.environ.update(options.to_env())
        os.environ.update({"FACEREC_DB": settings.db_url, "FACEREC_INDEX": str(settings.index_path),
                           "FACEREC_MODEL": settings.model_id, "FACEREC_INDEX_KIND": settings.index_kind,
                           "FACEREC_SCORER": settings.scorer})
        engine.close()
    uvicorn.run("facerec.service.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=10)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for (a kiosk, an app).")],
    scope: Annotated[list[str], typer.Option(help="recognize, enroll and/or admin (repeat the option).")],
    gallery: Annotated[Optional[list[str]], typer.Option(help="Galleries the key may use (repeat); default all.")] = None,
    expires_days: Annotated[Optional[float], typer.Option(min=0.0, help="Days until the key expires.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key; its token is printed once and never stored (only its SHA-256 is)."""
    main = _main()
    with main._command(as_json):
        expires = timedelta(days=expires_days) if expires_days is not None else None
        info, token = main._engine().keys.create(name, scope, gallery or ["*"], expires)
    _show(main, as_json, info.to_dict() | {"token": token},
          f"created key {info.id} ({', '.join(info.scopes)}); token (shown once):\n{token}")


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every key with its scopes, galleries, expiry and state (never secrets)."""
    main = _main()
    with main._command(as_json):
        keys = main._engine().keys.list()
    if as_json:
        main._print_json([k.to_dict() for k in keys])
        return
    table = main.Table(title=f"{len(keys)} API keys")
    for col in ("id", "name", "scopes", "galleries", "expires", "revoked", "locked until", "last used"):
        table.add_column(col)
    for k in keys:
        table.add_row(k.id, k.name, ",".join(k.scopes), ",".join(k.galleries), k.expires_at or "-",
                      k.revoked_at or "-", k.locked_until or "-", k.last_used_at or "-")
    main.out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Revoke a key: refused by every worker from its next request."""
    main = _main()
    with main._command(as_json):
        info = main._engine().keys.revoke(key_id)
    _show(main, as_json, info.to_dict(), f"revoked key {info.id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
    grace_minutes: Annotated[float, typer.Option(min=0.0, help="How long the old token keeps working.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A new token with the same grants; the old one ends now or after the grace period."""
    main = _main()
    with main._command(as_json):
        info, token = main._engine().keys.rotate(key_id, timedelta(minutes=grace_minutes))
    _show(main, as_json, info.to_dict() | {"token": token, "replaces": key_id},
          f"key {key_id} rotated to {info.id}; token (shown once):\n{token}")


def _show(main, as_json: bool, data: dict, text: str) -> None:
    if as_json:
        main._print_json(data)
    else:
        main.out.print(text, markup=False, soft_wrap=True)


@serve_app.command("openapi")
def openapi() -> None:
    """Print the service's OpenAPI schema (the committed openapi.json is this output)."""
    main = _main()
    with main._command(False):
        from facerec.service.app import create_app

        schema = create_app(main._engine()).openapi()
    print(json.dumps(schema, indent=2, sort_keys=True))
