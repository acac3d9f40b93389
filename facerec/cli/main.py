"""facerec's command line (typer). Parsing and printing only: every command calls `facerec.api`.

Exit codes: 0 success/match, 1 no match, 2 bad input (path, image, face, name, database, index, model),
3 partial success of a bulk command, 70 internal error, 75 database unavailable (rolled back: run it again),
130 interrupted (nothing half-written). Under --json every error, usage errors included, is one JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from facerec.cli.serve import serve_app
from facerec.cli.kiosk import kiosk as kiosk_command
from facerec.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NO_MATCH,
    EXIT_PARTIAL,
    FacerecError,
    UsageError,
)

app = typer.Typer(
    help="Face verification and recognition: enroll people from one photo, verify, identify.\n\n"
    "Settings come from flags, then FACEREC_* variables (FACEREC_DB, FACEREC_MODEL, FACEREC_INDEX, "
    "FACEREC_INDEX_KIND, FACEREC_HOME), then defaults (a SQLite file in ~/.local/share/facerec).\n\n"
    "Exit codes: 0 success or match, 1 no match, 2 bad input, 3 partial success (bulk commands), "
    "70 internal error, 75 database unavailable (rolled back; run again), 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
index_app = typer.Typer(help="The FAISS search index (rebuilt from the database whenever needed).")
db_app = typer.Typer(help="The enrollment database (SQLite file or any SQLAlchemy URL).")
evaluate_app = typer.Typer(help="Measure a model and pipeline on standard protocols (LFW pairs, 1:K).")
liveness_app = typer.Typer(help="Presentation-attack detection (printed photos, screens): train and evaluate.")
app.add_typer(index_app, name="index")
app.add_typer(db_app, name="db")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(liveness_app, name="liveness")
calibrate_app = typer.Typer(invoke_without_command=True)
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(serve_app, name="serve")
app.command("kiosk")(kiosk_command)
app.add_typer(__import__("facerec.cli.batch", fromlist=["app"]).app, name="batch")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts).")]


class _State:
    db: Optional[str] = None
    index: Optional[str] = None
    model: Optional[str] = None
    index_kind: Optional[str] = None
    scorer: Optional[str] = None
    key_file: Optional[str] = None


state = _State()


@app.callback()
def main_options(
    db: Annotated[Optional[str], typer.Option("--db", envvar="FACEREC_DB", show_envvar=True,
                                              help="Database: SQLAlchemy URL or SQLite file path.")] = None,
    index: Annotated[Optional[str], typer.Option("--index", envvar="FACEREC_INDEX", show_envvar=True,
                                                 help="Index file (default: beside the SQLite file).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", envvar="FACEREC_MODEL", show_envvar=True,
                                                 help="Embedding model id (see `facerec models`).")] = None,
    index_kind: Annotated[Optional[str], typer.Option("--index-kind", envvar="FACEREC_INDEX_KIND", show_envvar=True,
                                                      help="flat (exact, default); auto picks by gallery size and hardware; hnsw, ivf, ivfsq8, ivfpq, pcahnsw, pcaivfsq8 (CPU), torch, torchivf (GPU). Scores are always exact cosines.")] = None,
    scorer: Annotated[Optional[str], typer.Option("--scorer", envvar="FACEREC_SCORER", show_envvar=True,
                                                  help="cosine (default), learned (the model's trained verifier) or chi2 (LBP histograms).")] = None,
    key_file: Annotated[Optional[str], typer.Option("--key-file", envvar="FACEREC_KEY_FILE", show_envvar=True,
                                                    help="Seal templates at rest with this key (see `facerec keys`).")] = None,
) -> None:
    state.db, state.index, state.model, state.index_kind, state.scorer = db, index, model, index_kind, scorer
    state.key_file = key_file


def _settings():
    from facerec.api import Settings

    return Settings.resolve(db=state.db, index=state.index, model=state.model, index_kind=state.index_kind,
                            scorer=state.scorer, key_file=state.key_file)


def _engine():
    from facerec.api import FaceRec

    return FaceRec(_settings())


@contextmanager
def _command(as_json: bool) -> Iterator[None]:
    """Turn errors into one line + exit code; Ctrl-C into exit 130 (transactions roll back)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("facerec")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield
    except FacerecError as exc:
        if as_json:
            print(json.dumps({"error": exc.code, "message": str(exc)}))
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted: the current step was rolled back; nothing is half-written", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug or an unexpected system failure: one line, its own exit code
        message = f"internal error ({type(exc).__name__}): {' '.join(str(exc).split())[:300]}"
        if as_json:
            print(json.dumps({"error": "internal", "message": message}))
        err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    finally:
        logger.removeHandler(handler)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _print_metrics(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column metric/value table for humans (scripts use --json)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value")
    for label, value in rows:
        table.add_row(label, value)
    out.print(table)


@app.command()
def enroll(
    name: Annotated[Optional[str], typer.Argument(help="The person's name (omit with --from-dir).")] = None,
    images: Annotated[Optional[list[Path]], typer.Argument(help="One photo is enough; several make a better template.")] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from-dir", help="Folder with one sub-folder of photos per person; unchanged photos are skipped.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Enroll even if the photo fails the quality gate (recorded).")] = False,
    allow_duplicate: Annotated[bool, typer.Option("--allow-duplicate", help="Enroll even if the face matches another enrolled person.")] = False,
    subject: Annotated[bool, typer.Option("--subject", "--largest", help="When several large faces are in a photo, use the most central one instead of refusing.")] = False,
    embeddings: Annotated[Optional[Path], typer.Option("--embeddings", help="Bulk: precomputed embeddings (.npz / .parquet with names, vectors and the model id; see facerec/io/embeddings.py).")] = None,
    bulk: Annotated[bool, typer.Option("--bulk", help="With --from-dir: many people per transaction (--chunk templates), for large collections.")] = False,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Bulk: templates per transaction (an interruption keeps whole chunks; a re-run resumes).")] = 10_000,
    as_json: JsonFlag = False,
) -> None:
    """Enroll a person from one or more photos, or a whole folder (exit 3 when some photos were refused).

    [b]Examples[/b]: facerec enroll "Ada Lovelace" ada.jpg  |  facerec enroll --from-dir enrollment/  |
    facerec enroll --embeddings gallery.npz
    """
    with _command(as_json):
        if embeddings is not None:  # a new database takes the model the file declares
            from facerec.api import FaceRec, embeddings_file_model, resolve_model

            fr = FaceRec(resolve_model(_settings(), new_database=embeddings_file_model(embeddings)))
        else:
            fr = _engine()
        if embeddings is not None or bulk:
            if (embeddings is None) == (from_dir is None) or name is not None or images:
                raise UsageError("bulk enrollment takes either --embeddings FILE or --from-dir DIR --bulk")
            _enroll_bulk(fr, embeddings or from_dir, chunk, force, allow_duplicate, as_json)
            return
        if from_dir is not None:
            if name is not None or images:
                raise UsageError("give either NAME IMAGE... or --from-dir DIR, not both")
            results = _enroll_dir(fr, from_dir, force, allow_duplicate, as_json)
            if as_json:
                _print_json([r.to_dict() for r in results])
            else:
                _enroll_table(results)
            if any(r.errors for r in results):
                raise typer.Exit(EXIT_PARTIAL if any(r.added or r.skipped for r in results) else EXIT_BAD_INPUT)
            return
        if name is None:
            raise UsageError("give NAME and at least one IMAGE (or --from-dir DIR)")
        result = fr.enroll(name, images, force=force, allow_duplicate=allow_duplicate, choose_subject=subject)
        if as_json:
            _print_json(result.to_dict())
        else:
            out.print(f"enrolled {result.name!r}: {result.added} new template(s), {result.skipped} unchanged photo(s) skipped",
                      markup=False)


def _enroll_dir(fr, root: Path, force: bool, allow_duplicate: bool, quiet: bool):
    from facerec.api import person_folders

    total = len(person_folders(root))
    with _progress("enrolling", quiet) as progress:
        task = progress.add_task("people", total=total)
        return fr.enroll_from_dir(root, force=force, allow_duplicate=allow_duplicate,
                                  on_person=lambda _r: progress.advance(task))


class _RateColumn(ProgressColumn):
    """Items a second, for bulk commands (rich's own speed column counts bytes)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "-/s")


def _enroll_bulk(fr, source: Path, chunk: int, force: bool, allow_duplicate: bool, as_json: bool) -> None:
    columns = (TextColumn("enrolling"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("templates", total=None)
        result = fr.enroll_bulk(source, chunk=chunk, force=force, allow_duplicate=allow_duplicate,
                                progress=lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        _print_json(result.to_dict())
    else:
        rate = (result.added / result.seconds) if result.seconds else 0.0
        out.print(f"bulk enrollment: {result.added} new template(s), {result.skipped} already enrolled, "
                  f"{result.people} people, {result.chunks} transaction(s), {result.seconds:.1f} s "
                  f"({rate:,.0f} templates/s)", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
    for problem in result.errors:
        err.print(f"refused: {problem}", markup=False)
    if result.errors:
        raise typer.Exit(EXIT_PARTIAL if result.added or result.skipped else EXIT_BAD_INPUT)


def _enroll_table(results) -> None:
    table = Table(title="enrollment")
    for col in ("person", "added", "skipped", "problems"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, str(r.added), str(r.skipped), "; ".join(r.errors))
    out.print(table)


@app.command()
def verify(
    name: Annotated[str, typer.Argument(help="An enrolled person.")],
    image: Annotated[Path, typer.Argument(help="A photo with exactly one face.")],
    subject: Annotated[bool, typer.Option("--subject", "--largest", help="When several large faces are in the photo, use the most central one.")] = False,
    liveness: Annotated[bool, typer.Option("--liveness", help="Also refuse faces the liveness classifier calls a spoof (reason 'spoof').")] = False,
    as_json: JsonFlag = False,
) -> None:
    """1:1 check: is the face in IMAGE the enrolled person NAME? Exit 0 match, 1 no match or spoof, 2 bad input."""
    with _command(as_json):
        result = _engine().verify(name, image, choose_subject=subject, liveness=liveness)
    if as_json:
        _print_json(result.to_dict())
    else:
        verdict = "MATCH" if result.match else ("REFUSED (spoof)" if result.reason == "spoof" else "NO MATCH")
        out.print(f"{verdict}: {result.name!r} score {result.score:.4f} (threshold {result.threshold:.4f}; "
                  f"{result.threshold_source})", markup=False)
        if result.liveness is not None:
            out.print(f"liveness {result.liveness.score:.3f} (threshold {result.liveness.threshold:.3f})",
                      markup=False)
    if not result.match:
        raise typer.Exit(EXIT_NO_MATCH)


@app.command()
def identify(
    image: Annotated[Path, typer.Argument(help="A photo with any number of faces.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100, help="Candidates to list per face.")] = 1,
    liveness: Annotated[bool, typer.Option("--liveness", help="Also check each face's liveness: a spoof is 'unknown' (reason 'spoof').")] = False,
    as_json: JsonFlag = False,
) -> None:
    """1:K search: every face in IMAGE with its best match, or "unknown" below the threshold."""
    with _command(as_json):
        result = _engine().identify(image, top_k=top_k, liveness=liveness)
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"{image} (threshold {result.threshold:.4f})")
    for col in ("face", "box", "identity", "score", "margin", "candidates", "reason"):
        table.add_column(col)
    for i, face in enumerate(result.faces, 1):
        cands = ", ".join(f"{c.name} {c.score:.3f}" for c in face.candidates)
        table.add_row(str(i), str([int(v) for v in face.face.box]), face.name, f"{face.score:.4f}",
                      f"{face.margin:.4f}", cands, face.reason)
    out.print(table if result.faces else "no face found")


@app.command("list")
def list_people(as_json: JsonFlag = False) -> None:
    """List enrolled people and their number of templates."""
    with _command(as_json):
        people = _engine().people()
    if as_json:
        _print_json([p.__dict__ for p in people])
        return
    table = Table(title=f"{len(people)} enrolled")
    for col in ("name", "templates", "enrolled at"):
        table.add_column(col)
    for p in people:
        table.add_row(p.name, str(p.templates), p.created_at)
    out.print(table)


@app.command()
def remove(name: Annotated[str, typer.Argument(help="An enrolled person.")],
           erase: Annotated[bool, typer.Option("--erase", help="Also delete every other trace of the face (index temporaries, evidence, batch results, deleted database pages).")] = False,
           as_json: JsonFlag = False) -> None:
    """Remove a person's templates from the database and index (the audit trail is kept)."""
    with _command(as_json):
        fr = _engine()
        if erase:
            import facerec.batch.service  # noqa: F401 - registers the eraser of batch results
            import facerec.kiosk.evidence  # noqa: F401 - registers the eraser of kiosk evidence frames
        result = fr.erase(name) if erase else fr.remove(name)
    if as_json:
        _print_json(result.to_dict())
    else:
        out.print(f"removed {result.name!r} ({result.removed_templates} template(s))", markup=False)
        for trace in getattr(result, "traces", []):
            out.print(f"  {trace}", markup=False)


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """List the shipped embedding models with their input, accuracy, licences and which two are recommended
    (the most accurate, and the most accurate whose weights allow commercial use; --model ID picks one).

    Without --model an existing database keeps the model it was made for; a new database gets the
    recommended commercial-use model (marked "new databases")."""
    from facerec.api import model_roles, models as model_cards, new_database_model

    cards = model_cards()
    roles = model_roles()
    default = new_database_model()
    rows = [{"id": c.id, "recommended": roles.get(c.id, ""), "default": c.id == default,
             "embedding_dim": c.embedding_dim, "input": f"{c.template.width}x{c.template.height}",
             "lfw_view2_accuracy": c.extra.get("lfw_view2_accuracy", ""), "lfw_accuracy_declared": c.lfw_accuracy,
             "weights_licence": c.weights_licence, "training_data_licence": c.training_data_licence,
             "commercial_use": c.extra.get("commercial_use", "unknown: read the licences")} for c in cards]
    if as_json:
        _print_json(rows)
        return
    table = Table(title="embedding models (full licences: --json or facerec/weights/<id>/model.json)")
    for col in ("id", "recommended", "dim", "input", "LFW View 2 (facerec)", "commercial use"):
        table.add_column(col)
    for r in rows:
        name = r["id"] + (" (new databases)" if r["default"] else "")
        table.add_row(name, r["recommended"].replace("_", " "), str(r["embedding_dim"]), r["input"],
                      r["lfw_view2_accuracy"], r["commercial_use"])
    out.print(table)
    most = next((r["id"] for r in rows if r["recommended"] == "most_accurate"), None)
    out.print(f"A new database gets {default} (weights allow commercial use) unless you choose: "
              f"--model {most} (or FACEREC_MODEL={most}) is the most accurate, non-commercial only. An existing "
              f"database always keeps the model it was made for; another model means re-enrolling into a new "
              f"database.", markup=False)


@index_app.command("rebuild")
def index_rebuild(as_json: JsonFlag = False) -> None:
    """Rebuild the index file from the database (also done automatically when it is stale or corrupt)."""
    with _command(as_json):
        status = _engine().rebuild_index()
    if as_json:
        _print_json(status.to_dict())
    else:
        out.print(f"rebuilt {status.index} with {status.templates} template(s)", markup=False)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the database schema to the latest revision (Alembic)."""
    with _command(as_json):
        from facerec.api import redacted_url, upgrade_database

        settings = _settings()
        revision = upgrade_database(settings)
    if as_json:
        _print_json({"database": redacted_url(settings.db_url), "revision": revision})
    else:
        out.print(f"{redacted_url(settings.db_url)} is at revision {revision}", markup=False)


def _progress(label: str, as_json: bool = False) -> Progress:
    """A progress bar with ETA on stderr; shown under --json too (stdout carries only the JSON document)."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=err)


@evaluate_app.command("pairs")
def evaluate_pairs(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW-format pairs file (pairs.txt, pairsDevTest.txt, ...).")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Image folder (default: the pairs file's folder).")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=1, help="Use only the first N folds (quick runs).")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Flip fusion: embed each face and its mirror image (default: as the model declares).")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Folder for roc.png and det.png.")] = None,
    crop_cache: Annotated[Optional[Path], typer.Option("--crop-cache", help="Keep aligned crops here: later runs (other models with the same template) skip detection.")] = None,
    save_scores: Annotated[Optional[Path], typer.Option("--save-scores", help="Write pair scores, labels and folds (.npz) for plots that compare runs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """LFW pairs protocol through the whole pipeline: 10-fold accuracy, ROC AUC, EER, TAR at FAR 1e-2/1e-3.

    Model selection belongs on View 1 (pairsDevTrain/pairsDevTest); report View 2 (pairs.txt) once.
    """
    with _command(as_json):
        from facerec.api import evaluation_pipeline, scorer_for
        from facerec.evaluation.lfw_protocol import read_pairs
        from facerec.evaluation.pairs import evaluate_pairs as run, write_plots

        chosen = read_pairs(pairs, root)
        if folds is not None:
            chosen = [p for p in chosen if p.fold < folds]
        pipeline = evaluation_pipeline(model=state.model, flip_fusion=flip, db=state.db)
        scorer = scorer_for(state.scorer or "cosine", pipeline.model.id)
        images = len({q for p in chosen for q in (p.path_a, p.path_b)})
        with _progress("embedding", as_json) as progress:
            task = progress.add_task("images", total=images)
            report, scores, labels = run(pipeline, chosen, progress=lambda n: progress.advance(task, n),
                                         cache_dir=crop_cache, scorer=scorer)
        if plots is not None:
            write_plots(plots, {report.model_id: (scores, labels)}, title=f"{pairs.name}")
        if save_scores is not None:
            import numpy as np

            save_scores.parent.mkdir(parents=True, exist_ok=True)
            np.savez(save_scores, scores=scores, labels=labels, folds=np.array([p.fold for p in chosen]),
                     model_id=report.model_id, scorer=report.scorer, flip=pipeline.flip_fusion)
    if as_json:
        _print_json(report.to_dict())
        return
    rows = []
    if report.accuracy_mean is not None:
        rows.append((f"{report.folds}-fold accuracy", f"{report.accuracy_mean:.4f} ± {report.accuracy_std:.4f}"))
    rows += [("ROC AUC", f"{report.roc_auc:.5f}"), ("EER (threshold)", f"{report.eer:.4f} ({report.eer_threshold:.4f})")]
    rows += [(f"TAR @ FAR {far}", f"{tar:.4f}") for far, tar in report.tar_at_far.items()]
    rows += [("no face (pairs scored -1)", f"{report.failed_images} images, {report.failed_pairs} pairs"),
             ("found only with relaxed detection", str(report.relaxed_detections))]
    _print_metrics(f"{pairs.name}: {report.pairs} pairs, model {report.model_id}, scorer {report.scorer}", rows)


@evaluate_app.command("ident")
def evaluate_ident(
    root: Annotated[Path, typer.Option("--root", help="A folder per identity.")],
    unknown_fraction: Annotated[float, typer.Option("--unknown-fraction", min=0.01, max=0.9, help="Identities held out as unknowns.")] = 0.2,
    gallery_images: Annotated[int, typer.Option("--gallery-images", min=1, help="Photos per enrolled identity (1 = one-shot; more = mean template).")] = 1,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Flip fusion (default: as the model declares).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the known/unknown split.")] = 0,
    crop_cache: Annotated[Optional[Path], typer.Option("--crop-cache", help="Keep aligned crops here for later runs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open-set 1:K identification: one-shot gallery, held-out unknowns; rank-1 and DIR at FPIR 1% / 10%."""
    with _command(as_json):
        from facerec.api import evaluation_pipeline
        from facerec.evaluation.identification import evaluate_identification

        pipeline = evaluation_pipeline(model=state.model, flip_fusion=flip, db=state.db)
        with _progress("embedding", as_json) as progress:
            task = progress.add_task("images", total=None)
            report = evaluate_identification(pipeline, root, unknown_fraction, gallery_images, seed,
                                             progress=lambda n: progress.advance(task, n),
                                             on_total=lambda n: progress.update(task, total=n),
                                             cache_dir=crop_cache)
    if as_json:
        _print_json(report.to_dict())
        return
    rows = [("rank-1 (closed set)", f"{report.rank1:.4f}"), ("rank-5 (closed set)", f"{report.rank5:.4f}")]
    rows += [(f"DIR @ FPIR {fpir}", f"{value:.4f} (threshold {report.thresholds_at_fpir[fpir]:.4f})")
             for fpir, value in report.dir_at_fpir.items()]
    rows.append(("probes (mated / non-mated)", f"{report.mated_probes} / {report.non_mated_probes}"))
    _print_metrics(f"1:K on {root}: {report.identities_known} enrolled, {report.identities_unknown} unknown", rows)


@calibrate_app.callback()
def calibrate(
    ctx: typer.Context,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="LFW-format pairs file (e.g. pairsDevTrain.txt).")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", help="Image folder of the pairs file (default: its folder).")] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from-dir", help="A folder per identity: all genuine pairs, sampled impostors.")] = None,
    far: Annotated[float, typer.Option("--far", min=1e-9, max=0.5, help="Target false accept rate of the operating point.")] = 1e-3,
    use_eer: Annotated[bool, typer.Option("--eer", help="Operate at the equal error rate instead of a FAR target.")] = False,
    impostors: Annotated[str, typer.Option("--impostors", help="all: every cross-identity pair of the images (resolves small FARs); listed: the file's mismatched pairs.")] = "all",
    report: Annotated[Path, typer.Option("--report", help="Folder for roc.png, det.png and calibration.md.")] = Path("calibration"),
    crop_cache: Annotated[Optional[Path], typer.Option("--crop-cache", help="Keep aligned crops here for later runs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure ROC/EER of the current model and pipeline, store the operating point, and put it in force.

    verify, identify and enrollment's duplicate check then use it (and report it with every decision, with
    the data it was measured on). `calibrate show`: the threshold in force and its data; `calibrate check
    FOLDER`: does it hold on your own photos?
    [b]Example[/b]: facerec calibrate --pairs ../shared/data/faces/lfw/pairsDevTrain.txt --far 1e-3
    """
    if ctx.invoked_subcommand is not None:
        return
    with _command(as_json):
        fr = _engine()
        with _progress("embedding", as_json) as progress:
            task = progress.add_task("images", total=None)
            result = fr.calibrate(
                pairs_file=pairs, root=root, from_dir=from_dir, far=None if use_eer else far, impostors=impostors,
                report_dir=report, progress=lambda n: progress.advance(task, n),
                on_total=lambda n: progress.update(task, total=n), cache_dir=crop_cache,
            )
    calibration = result.calibration
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"calibration of {calibration.model_id}: {calibration.n_genuine:,} genuine / "
                        f"{calibration.n_impostor:,} impostor pairs")
    for col in ("target FAR", "threshold", "95% CI", "measured FAR", "FRR"):
        table.add_column(col)
    for p in calibration.points:
        table.add_row(f"{p.target_far:g}", f"{p.threshold:.4f}", f"{p.threshold_ci[0]:.4f}–{p.threshold_ci[1]:.4f}",
                      f"{p.far:.2e}", f"{p.frr:.4f}")
    out.print(table)
    out.print(f"EER {calibration.eer:.4f} at {calibration.eer_threshold:.4f}; in force: {calibration.operating} "
              f"threshold {calibration.threshold:.4f}; report in {report}/", markup=False)
    for note in calibration.notes:
        err.print(f"warning: {note}", markup=False)


@calibrate_app.command("show")
def calibrate_show(as_json: JsonFlag = False) -> None:
    """The thresholds in force (1:1 and 1:K), where each comes from and the data it was measured on."""
    with _command(as_json):
        status = _engine().calibration_status()
    if as_json:
        _print_json(status)
        return
    out.print(f"model {status['model']['id']}, scorer {status['scorer']}", markup=False)
    for kind in ("verification", "identification"):
        point = status[kind]
        promise = ", ".join(f"{name} {point[key]:.4g}" for name, key in (("FAR", "promised_far"), ("FRR", "promised_frr"))
                            if point[key] is not None)
        out.print(f"{kind}: threshold {point['threshold']:.4f}" + (f" (promised {promise})" if promise else ""),
                  markup=False)
        out.print(f"  from {point['source']}", markup=False, soft_wrap=True)


@calibrate_app.command("check")
def calibrate_check(
    folder: Annotated[Path, typer.Argument(help="Your own labelled photos: a sub-folder per person (as for enroll --from-dir).")],
    crop_cache: Annotated[Optional[Path], typer.Option("--crop-cache", help="Keep aligned crops here for later runs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure FAR and FRR of the 1:1 threshold IN FORCE on your own photos and compare them with what it
    promised (never calibrates; writes only an audit event).

    Genuine pairs: every two photos of one person; impostor pairs: every two photos of different people.
    Each rate gets a Clopper-Pearson 95 % interval; it has drifted when the whole interval lies above the
    promise. Exit codes: 0 consistent, 1 drifted (a warning on stderr: calibrate on data like yours),
    2 bad input.
    """
    with _command(as_json):
        fr = _engine()
        with _progress("embedding", as_json) as progress:
            task = progress.add_task("images", total=None)
            result = fr.check_calibration(folder, progress=lambda n: progress.advance(task, n),
                                          on_total=lambda n: progress.update(task, total=n), cache_dir=crop_cache)
    if as_json:
        _print_json(result.to_dict())
    else:
        data = result.data
        table = Table(title=f"threshold {result.threshold:.4f} on {folder}: {data['people']} people, "
                            f"{data['images']} photos ({data['images_without_face']} without a face)")
        for col in ("rate", "promised", "measured", "95% CI", "errors / pairs", "verdict"):
            table.add_column(col)
        for r in (result.far, result.frr):
            table.add_row(r.rate_name, "—" if r.promised is None else f"{r.promised:.2g}", f"{r.rate:.2g}",
                          f"{r.ci[0]:.2g}–{r.ci[1]:.2g}", f"{r.errors:,} / {r.pairs:,}", r.verdict)
        out.print(table)
        out.print(f"threshold from {result.threshold_source}", markup=False, soft_wrap=True)
        out.print(f"your data's fingerprint: {data['fingerprint'][:12]}", markup=False)
    if result.drifted:
        rates = " and ".join(f"{r.rate_name} {r.rate:.2g} (95% CI from {r.ci[0]:.2g}) above the promised "
                             f"{r.promised:.2g}" for r in (result.far, result.frr) if r.drifted)
        err.print(f"warning: the threshold in force has drifted on {folder}: {rates}; calibrate on data like "
                  f"yours (`facerec calibrate --from-dir ...`)", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_NO_MATCH)


@app.command("calibrate-identification")
def calibrate_identification(
    unknowns: Annotated[Path, typer.Argument(help="Photos of people who are NOT enrolled (searched recursively).")],
    fpir: Annotated[float, typer.Option("--fpir", min=1e-6, max=0.5, help="Target false positive identification rate.")] = 0.01,
    as_json: JsonFlag = False,
) -> None:
    """Gallery-size-aware 1:K threshold: at most FPIR of unknown people may be identified as someone.

    Re-run it when the gallery grows: with N enrolled people an unknown face gets N chances to pass.
    """
    with _command(as_json):
        result = _engine().calibrate_identification(unknowns, fpir)
    if as_json:
        _print_json(result.to_dict())
    else:
        out.print(f"identification threshold {result.threshold:.4f} (FPIR {result.measured_fpir:.4f} measured, "
                  f"target {fpir:g}) for a gallery of {result.gallery_size}", markup=False)


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train embedding networks: `facerec train cache ...` (aligned-crop cache), `facerec train fit ...`
    (triplet / ArcFace / both, from scratch or a checkpoint). `facerec train --help` lists every option."""
    from facerec.train.cli import main as train_main

    with _command(False):
        code = train_main(ctx.args or ["--help"])
    raise typer.Exit(code or 0)


@liveness_app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)
def liveness_train(ctx: typer.Context) -> None:
    """Train the liveness classifier (`facerec liveness train --data ../shared/data/liveness/nuaa --out DIR`)."""
    from facerec.train.liveness import main as liveness_main

    with _command(False):
        code = liveness_main(ctx.args or ["--help"])
    raise typer.Exit(code or 0)


@liveness_app.command("evaluate")
def liveness_evaluate(
    live: Annotated[Path, typer.Option("--live", help="Folder of bona fide frames or photos (searched recursively).")],
    spoof: Annotated[Path, typer.Option("--spoof", help="Folder of attack frames (printed photos, screens).")],
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Liveness model id (repeat to compare; 'all' = every one). Default: the default model.")] = None,
    subset: Annotated[Optional[list[str]], typer.Option("--subset", help="Also report on the images whose file name matches: NAME=GLOB, e.g. 'session 03=*_*_*_03_*.jpg' (repeatable).")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the ROC (APCER vs 1-BPCER) as PNG here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """ISO/IEC 30107-3 metrics of liveness models: APCER, BPCER, ACER, AUC, BPCER@APCER 1%, CPU ms a face."""
    with _command(as_json):
        from facerec.api import liveness_models
        from facerec.evaluation.liveness import evaluate_liveness

        if subset and any("=" not in s for s in subset):
            raise UsageError("--subset takes NAME=GLOB")
        models = sorted(liveness_models()) if model == ["all"] else model
        evaluation = evaluate_liveness(live, spoof, models, dict(s.split("=", 1) for s in subset or []))
        if plot is not None:
            from facerec.api import plot_liveness_roc

            plot_liveness_roc(evaluation.scores, evaluation.is_live, plot)
    if as_json:
        _print_json(evaluation.to_dict())
        return
    from rich import box

    subsets = {r.subset: f"{r.subset} {r.report.n_bona_fide} live + {r.report.n_attack} attack" for r in evaluation.rows}
    table = Table(title=f"liveness on {len(evaluation.paths)} faces ({len(evaluation.no_face)} images without a face)",
                  caption=f"{'; '.join(subsets.values())}. BPCER@1% = BPCER at APCER 1%; CPU ms per face (one thread)",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for column in ("subset", "model", "threshold", "APCER", "BPCER", "ACER", "AUC", "BPCER@1%", "CPU ms"):
        table.add_column(column, no_wrap=True)
    for r in evaluation.rows:
        m = r.report
        table.add_row(r.subset, r.model, f"{m.threshold:.4g}", f"{m.apcer:.2%}", f"{m.bpcer:.2%}", f"{m.acer:.2%}",
                      f"{m.auc:.4f}", f"{m.bpcer_at_apcer_1pct:.2%}", f"{r.ms_per_face:.1f}")
    Console(width=max(out.width, 110)).print(table)  # nine columns: wider than a piped 80


@app.command()
def demo(
    workdir: Annotated[Optional[Path], typer.Option(help="Where to keep the demo database (default: FACEREC_HOME/demo).")] = None,
) -> None:
    """End-to-end demo on public-domain photos shipped by installed packages (and enrollment/ if filled)."""
    from facerec.demo import run_demo

    with _command(False):
        run_demo(workdir, out)


from facerec.cli import admin  # noqa: E402  (audit and keys commands; they use the helpers above)

admin.register(app)


def main() -> None:
    """Run the CLI; click's usage errors become one line (one JSON line under --json) and exit 2."""
    argv = sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except typer.TyperException as exc:  # typer's click: usage errors, bad parameters, unreadable files
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # plain `facerec`: the help text, as before
            raise SystemExit(exc.exit_code) from None
        as_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(exc.format_message().split()) + hint
        if as_json:
            print(json.dumps({"error": "usage", "message": message}))
        err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        code = EXIT_BAD_INPUT
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
