"""Security commands: the audit log and its hash chain (`facerec audit`, `facerec audit verify`) and the
template keys (`facerec keys generate | status | rotate`). Registered on the main app by `register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facerec.cli.main import EXIT_NO_MATCH, JsonFlag, _command, _engine, _print_json, out

audit_app = typer.Typer(help="The audit log of every decision and change, and its tamper-evident hash chain.",
                        invoke_without_command=True)
keys_app = typer.Typer(help="Keys that seal templates at rest (AES-256-GCM): generate, status, rotate.")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")


@audit_app.callback()
def audit(ctx: typer.Context,
          limit: Annotated[int, typer.Option(min=1, help="Most recent events to show.")] = 20,
          as_json: JsonFlag = False) -> None:
    """Show the audit log of enroll / verify / identify / remove decisions (`audit verify` checks its chain)."""
    if ctx.invoked_subcommand is not None:
        return
    with _command(as_json):
        events = _engine().audit_events(limit)
    if as_json:
        _print_json(events)
        return
    table = Table(title="audit log")
    for col in ("at", "action", "person", "outcome", "score", "threshold"):
        table.add_column(col)
    for e in events:
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(e["at"], e["action"], e["person"] or "", e["outcome"], fmt(e["score"]), fmt(e["threshold"]))
    out.print(table)


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Recompute the hash chain: exit 0 intact, 1 when events were edited, deleted or inserted.

    Keep the printed head hash somewhere the database's administrators cannot write: a later verify then
    also proves the chain was not rewritten as a whole."""
    with _command(as_json):
        report = _engine().verify_audit()
    if as_json:
        _print_json(report)
    else:
        state = "intact" if report["intact"] else f"TAMPERED ({len(report['problems'])} problem(s))"
        out.print(f"audit chain {state}: {report['events']} event(s), head event {report['head_id']} "
                  f"hash {report['head_hash']}", markup=False)
        for p in report["problems"]:
            out.print(f"  event {p['id']}: {p['problem']}: {p['detail']}", markup=False)
    if not report["intact"]:
        raise typer.Exit(EXIT_NO_MATCH)


@keys_app.command("generate")
def keys_generate(path: Annotated[Path, typer.Argument(help="New key file (created 0600; never overwritten).")],
                  as_json: JsonFlag = False) -> None:
    """Write a new random key file; seal templates with it through FACEREC_KEY_FILE or `keys rotate`."""
    with _command(as_json):
        from facerec.api import generate_key

        key_id = generate_key(path)
    if as_json:
        _print_json({"key_file": str(path), "key_id": key_id})
    else:
        out.print(f"wrote {path} (key id {key_id}); keep a copy: templates sealed with it cannot be read "
                  f"without it", markup=False)


@keys_app.command("status")
def keys_status(as_json: JsonFlag = False) -> None:
    """How many templates each key sealed ("clear": not sealed)."""
    with _command(as_json):
        usage = _engine().key_usage()
    if as_json:
        _print_json(usage)
        return
    for key_id, count in sorted(usage.items()):
        out.print(f"{key_id or 'clear'}: {count} template(s)", markup=False)


@keys_app.command("rotate")
def keys_rotate(new_key_file: Annotated[Path, typer.Option("--new-key-file", help="The key to seal every template with (see `keys generate`).")],
                as_json: JsonFlag = False) -> None:
    """Re-seal every template under a new key in one transaction (the current key: --key-file /
    FACEREC_KEY_FILE; templates in the clear are sealed too). Then point FACEREC_KEY_FILE at the new key."""
    with _command(as_json):
        result = _engine().rotate_key(new_key_file)
    if as_json:
        _print_json(result)
    else:
        out.print(f"re-sealed {result['templates']} template(s) from key {result['from_key'] or '(clear)'} to "
                  f"{result['to_key']}: set FACEREC_KEY_FILE={new_key_file}", markup=False)
