"""`facerec batch ...`: scan photo folders into a job, cluster and name the unknown faces, export, report.

Parsing and printing only, over `facerec.batch.service`. Helpers of the main CLI (error handling, settings)
are imported when a command runs: main.py imports this module while it is still being defined.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Batch identification over photo collections: scan, cluster, name, export, report.")

JobArg = Annotated[str, typer.Argument(help="The job's name (see `facerec batch jobs`).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts).")]


def _main():
    # the module, not the `main` function that facerec.cli re-exports under the same name
    return importlib.import_module("facerec.cli.main")


def _service():
    from facerec.batch.service import BatchService

    return BatchService(_main()._settings())


@app.command("scan")
def scan_command(
    folders: Annotated[list[Path], typer.Argument(help="Folders (walked recursively) or photo files.")],
    job: Annotated[str, typer.Option("--job", help="Job name: a re-run of the same job skips unchanged photos.")] = "default",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Candidates kept per face.")] = 3,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes (0: in the main process).")] = 2,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Photos per detection batch and per transaction.")] = 32,
    max_side: Annotated[int, typer.Option("--max-side", min=64, help="Photos are shrunk to this longer side first.")] = 1600,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Stop after this many new photos.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local (worker processes) or ray (Ray Data).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address (ray engine); default: local.")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Also write the job's faces here (.csv, .jsonl, .parquet).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write an HTML contact sheet here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Find every face in every photo under FOLDERS, identify it against the gallery, store it in the job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from facerec.batch.pipeline import ScanOptions

    cli = _main()
    with cli._command(as_json):
        service = _service()
        options = ScanOptions(top_k=top_k, workers=workers, chunk=chunk, max_side=max_side, limit=limit)
        bar = Progress(TextColumn(f"scan {job}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=cli.err)
        task = bar.add_task("scan", total=None, rate="")
        start: list[float] = []

        def progress(done: int, total: int) -> None:
            if not start:
                start.extend([time.perf_counter(), done])
            elapsed = time.perf_counter() - start[0]
            rate = (done - start[1]) / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=done, total=total, rate=f"{rate:.1f} photos/s")

        with bar:
            result = service.scan([str(f) for f in folders], job, options, progress=progress, engine=engine,
                                  ray_address=ray_address)
        extra = {}
        if export:
            extra["exported"] = service.export(job, export)
        if report:
            service.report(job, report)
            extra["report"] = str(report)
        if as_json:
            cli._print_json(result.to_dict() | extra)
        else:
            w = result.walk
            cli.out.print(
                f"job {job}: {result.scanned} photos scanned ({result.rate:.1f}/s), {result.unchanged} unchanged, "
                f"{result.errors} unreadable; {result.faces} faces, {result.identified} identified; skipped "
                f"{w['other_types']} other files, {w['unreadable']} unreadable entries, {w['symlink_loops']} "
                f"symlink loops", markup=False, highlight=False)
        if result.errors:
            raise typer.Exit(cli.EXIT_PARTIAL)


@app.command("jobs")
def jobs_command(as_json: JsonFlag = False) -> None:
    """Jobs in the database with their photo and face counts."""
    cli = _main()
    with cli._command(as_json):
        jobs = _service().jobs()
        if as_json:
            cli._print_json(jobs)
            return
        for j in jobs:
            cli.out.print(f"{j['name']}: {j['files']} photos, {j['faces']} faces ({j['model']}, {j['updated_at']})",
                          markup=False, highlight=False)


@app.command("export")
def export_command(job: JobArg, path: Annotated[Path, typer.Argument(help="Output file: .csv, .jsonl or .parquet.")],
                   fmt: Annotated[Optional[str], typer.Option("--format", help="csv, jsonl or parquet (default: by suffix).")] = None,
                   as_json: JsonFlag = False) -> None:
    """Every face of a job: file, box, detection score, quality, name or unknown, score, margin, top-k, cluster."""
    cli = _main()
    with cli._command(as_json):
        n = _service().export(job, path, fmt)
        if as_json:
            cli._print_json({"job": job, "path": str(path), "faces": n})
        else:
            cli.out.print(f"{n} faces written to {path}", markup=False, highlight=False)
