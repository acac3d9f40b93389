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
    analyse_in_workers: Annotated[bool, typer.Option("--analyse-in-workers", help="Workers also detect and embed (CPU: uses every core; each worker loads the model).")] = False,
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
        options = ScanOptions(top_k=top_k, workers=workers, chunk=chunk, max_side=max_side, limit=limit,
                              analyse_in_workers=analyse_in_workers)
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


@app.command("cluster")
def cluster_command(
    job: JobArg,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Average-linkage merge threshold (default: the calibrated one).")] = None,
    neighbours: Annotated[int, typer.Option("--neighbours", min=1, help="k of the k-NN graph.")] = 30,
    quality_only: Annotated[bool, typer.Option("--quality-only", help="Leave faces that fail the quality checks unclustered.")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write an HTML contact sheet here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cluster the job's unknown faces from scratch, keeping every name, merge, split and rejection."""
    cli = _main()
    with cli._command(as_json):
        service = _service()
        summary = service.cluster(job, threshold, neighbours, quality_only)
        if report:
            service.report(job, report)
        if as_json:
            cli._print_json(summary.to_dict())
        else:
            cli.out.print(f"job {job}: {summary.faces} faces in {summary.clusters} clusters "
                          f"({summary.multi_face_clusters} with two faces or more) at threshold "
                          f"{summary.threshold:.4f} ({summary.threshold_source})", markup=False, highlight=False)


@app.command("clusters")
def clusters_command(job: JobArg, min_size: Annotated[int, typer.Option("--min-size", min=1)] = 2,
                     as_json: JsonFlag = False) -> None:
    """The job's clusters, largest first: id, size, name, face ids."""
    cli = _main()
    with cli._command(as_json):
        views = [v for v in _service().clusters(job) if v.size >= min_size]
        if as_json:
            cli._print_json([v.to_dict() for v in views])
            return
        for v in views:
            shown = ", ".join(map(str, v.faces[:10])) + (" ..." if v.size > 10 else "")
            cli.out.print(f"cluster {v.id}: {v.size} faces, {v.name or 'unnamed'} (faces {shown})",
                          markup=False, highlight=False)


@app.command("name")
def name_command(job: JobArg, cluster: Annotated[int, typer.Argument(help="Cluster id (see `batch clusters`).")],
                 name: Annotated[str, typer.Argument(help="The person's name.")],
                 enroll: Annotated[bool, typer.Option("--enroll/--no-enroll", help="Also enroll the person from the cluster's best faces.")] = True,
                 as_json: JsonFlag = False) -> None:
    """Name a cluster: its faces keep the name through every re-clustering; the person is enrolled."""
    cli = _main()
    with cli._command(as_json):
        result = _service().name(job, cluster, name, enroll)
        if as_json:
            cli._print_json(result)
        else:
            cli.out.print(f"cluster {cluster}: {result['faces']} faces named {name}; {result['enrolled']} templates "
                          f"enrolled", markup=False, highlight=False)


@app.command("merge")
def merge_command(job: JobArg, clusters: Annotated[list[int], typer.Argument(help="Two or more cluster ids.")],
                  as_json: JsonFlag = False) -> None:
    """These clusters are one person (kept by every re-clustering)."""
    cli = _main()
    with cli._command(as_json):
        if len(clusters) < 2:
            raise cli.UsageError("merge needs two cluster ids or more")
        merged = _service().merge(job, clusters)
        if as_json:
            cli._print_json({"job": job, "cluster": merged})
        else:
            cli.out.print(f"merged into cluster {merged}", markup=False, highlight=False)


@app.command("split")
def split_command(job: JobArg, cluster: Annotated[int, typer.Argument(help="Cluster id.")],
                  faces: Annotated[list[int], typer.Argument(help="Face ids that leave the cluster together.")],
                  as_json: JsonFlag = False) -> None:
    """These faces are not the rest of their cluster (kept by every re-clustering)."""
    cli = _main()
    with cli._command(as_json):
        new = _service().split(job, cluster, faces)
        if as_json:
            cli._print_json({"job": job, "cluster": new})
        else:
            cli.out.print(f"{len(faces)} faces moved to cluster {new}", markup=False, highlight=False)


@app.command("reject")
def reject_command(job: JobArg, faces: Annotated[list[int], typer.Argument(help="Face ids.")],
                   as_json: JsonFlag = False) -> None:
    """"Not this person": the faces leave their cluster and never join one with its name again."""
    cli = _main()
    with cli._command(as_json):
        _service().reject(job, faces)
        if as_json:
            cli._print_json({"job": job, "rejected": faces})
        else:
            cli.out.print(f"{len(faces)} faces rejected from their clusters", markup=False, highlight=False)


@app.command("report")
def report_command(job: JobArg, path: Annotated[Path, typer.Argument(help="Output HTML file.")],
                   as_json: JsonFlag = False) -> None:
    """An HTML contact sheet: one row per identity and per unknown cluster, purity estimates, uncertain faces."""
    cli = _main()
    with cli._command(as_json):
        _service().report(job, path)
        if as_json:
            cli._print_json({"job": job, "report": str(path)})
        else:
            cli.out.print(f"report written to {path}", markup=False, highlight=False)


@app.command("xmp")
def xmp_command(job: JobArg,
                out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the sidecars (default: beside each photo).")] = None,
                as_json: JsonFlag = False) -> None:
    """Write XMP sidecars (MWG face regions, read by digiKam and Immich) for photos with named faces."""
    cli = _main()
    with cli._command(as_json):
        written = _service().xmp(job, out_dir)
        if as_json:
            cli._print_json({"job": job, "sidecars": [str(p) for p in written]})
        else:
            cli.out.print(f"{len(written)} XMP sidecars written", markup=False, highlight=False)


@app.command("reembed")
def reembed_command(
    job: JobArg,
    model: Annotated[str, typer.Option("--model", help="The new embedding model (see `facerec models`).")],
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Photos per transaction.")] = 32,
    no_switch: Annotated[bool, typer.Option("--no-switch", help="Only stage the new embeddings; switch on a later run.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try again faces not found in their photo last time (after a re-scan).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-embed every face of JOB with another model, keeping face ids (names, clusters, links, rejections).
    Resumable: a killed run continues where it stopped; the old embeddings serve until the atomic switch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cli = _main()
    with cli._command(as_json):
        bar = Progress(TextColumn(f"re-embed {job} with {model}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=cli.err)
        task = bar.add_task("reembed", total=None)
        with bar:
            result = _service().reembed(job, model, chunk, switch=not no_switch, retry_failed=retry_failed,
                                        progress=lambda done, total: bar.update(task, completed=done, total=total))
        if as_json:
            cli._print_json(result.to_dict())
        else:
            state = f"switched to {result.model}" if result.switched else f"still on {result.old_model}"
            cli.out.print(f"job {job}: {result.staged} of {result.faces} faces embedded with {result.model} "
                          f"({result.embedded_now} in this run, {result.failed} not found again); {state}",
                          markup=False, highlight=False)
            for face_id, why in result.failures:
                cli.err.print(f"face {face_id}: {why}", markup=False, highlight=False)
        if result.failed:
            raise typer.Exit(cli.EXIT_PARTIAL)
