"""Batch identification: scan, skip, resume after SIGKILL, clustering under constraints, names kept by
re-clustering, export, and the HTML report in a real headless Chromium. Real LFW photos, real model."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.api import Settings
from facerec.batch.cluster import ClusterInput, cluster
from facerec.batch.pipeline import ScanOptions
from facerec.batch.service import BatchService
from tests.conftest import REPO, need

PEOPLE = {"Aaron_Peirsol": 4, "Adam_Sandler": 4, "Amelie_Mauresmo": 6, "Abdullah_Gul": 6}
OPTIONS = ScanOptions(workers=1, chunk=8)


def make_folder(lfw: Path, root: Path, people: dict[str, int] = PEOPLE) -> Path:
    """A small "photo archive": LFW photos in nested folders, a two-face photo, junk, a loop, a broken link."""
    photos = root / "photos"
    for person, n in people.items():
        folder = photos / person[0].lower() / person
        folder.mkdir(parents=True)
        for path in sorted((lfw / person).glob("*.jpg"))[:n]:
            shutil.copy(path, folder / path.name)
    # one photo holding two faces of one person (two of their photos side by side): cannot-link material
    gul = sorted((lfw / "Abdullah_Gul").glob("*.jpg"))
    pair = Image.new("RGB", (352, 176))
    pair.paste(Image.open(gul[10]), (0, 0))
    pair.paste(Image.open(gul[11]), (176, 0))
    pair.save(photos / "gul_twice.png")
    (photos / "notes.txt").write_text("not a photo")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (photos / "a" / "loop").symlink_to(photos)
    (photos / "dangling.jpg").symlink_to(root / "missing.jpg")
    return photos


@pytest.fixture(scope="module")
def scanned(lfw, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    photos = make_folder(lfw, root)
    service = BatchService(Settings.resolve(db=str(root / "facerec.db")))
    report = service.scan([str(photos)], "album", OPTIONS)
    return service, photos, report


def test_scan_counts_every_face_and_every_problem(scanned):
    service, photos, report = scanned
    n_photos = sum(PEOPLE.values()) + 2  # + the two-face photo + the corrupt one
    assert report.walk == {"photos": n_photos, "other_types": 1, "unreadable": 1, "symlink_loops": 1,
                           "duplicate_paths": 0}
    assert report.scanned == n_photos and report.errors == 1 and report.unchanged == 0
    faces = service.store.faces(service.store.job_id("album"))
    assert len(faces) == report.faces >= sum(PEOPLE.values()) + 2
    two = [i for i, p in enumerate(faces.paths) if p.endswith("gul_twice.png")]
    assert len(two) == 2
    assert all(len(c) == 0 and m is None for c, m in zip(faces.candidates, faces.match))  # empty gallery
    assert faces.embeddings.shape[1] == service.fr.card.embedding_dim
    errors = service.store.file_errors(service.store.job_id("album"))
    assert [Path(p).name for p, _ in errors] == ["broken.jpg"]


def test_rerun_skips_unchanged_and_rescans_changed(scanned, lfw):
    service, photos, _ = scanned
    again = service.scan([str(photos)], "album", OPTIONS)
    assert again.scanned == 0 and again.unchanged == again.walk["photos"]
    touched = next(photos.rglob("Adam_Sandler_0001.jpg"))
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # new mtime, same bytes: hash says same
    changed = next(photos.rglob("Aaron_Peirsol_0002.jpg"))
    job = service.store.job_id("album")
    before = {p: i for p, i in zip(service.store.faces(job).paths, service.store.faces(job).ids.tolist())}
    shutil.copy(lfw / "Alvaro_Uribe" / "Alvaro_Uribe_0001.jpg", changed)  # new content under an old path
    third = service.scan([str(photos)], "album", OPTIONS)
    assert third.scanned == 1 and third.unchanged == third.walk["photos"] - 1
    after = service.store.faces(job)
    assert before[str(touched)] in after.ids.tolist()  # kept: not re-analysed
    assert before[str(changed)] not in after.ids.tolist()  # replaced by the new content's face
    assert after.paths.count(str(changed)) == 1
    assert service.scan([str(photos)], "album", OPTIONS).scanned == 0


def test_resume_after_sigkill_loses_and_duplicates_nothing(lfw, tmp_path):
    people = {"Aaron_Peirsol": 4, "Adam_Sandler": 4}
    photos = make_folder(lfw, tmp_path, people)
    db = tmp_path / "killed.db"
    cmd = [sys.executable, str(REPO / "cli.py"), "--db", str(db), "batch", "scan", str(photos), "--job", "k",
           "--chunk", "2", "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, timeout=30) as conn:
                done = conn.execute("SELECT count(*) FROM batch_files").fetchone()[0]
        except sqlite3.Error:
            done = 0
        if done >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db, timeout=30) as conn:
        done = conn.execute("SELECT count(*) FROM batch_files").fetchone()[0]
    need(done >= 2, "the scan did not get under way before the deadline")
    total = sum(people.values()) + 2
    assert done < total, "killed too late to test resuming"
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 3, resumed.stderr  # 3: partial (the corrupt photo), everything else done
    out = json.loads(resumed.stdout)
    assert out["unchanged"] + out["scanned"] == total and out["unchanged"] >= done
    # the same photos scanned without interruption give the same faces: none lost, none twice
    service = BatchService(Settings.resolve(db=str(db)))
    service.scan([str(photos)], "clean", OPTIONS)
    killed, clean = (service.store.faces(service.store.job_id(j)) for j in ("k", "clean"))
    key = lambda f: sorted(zip(f.paths, f.face_index.tolist()))  # noqa: E731
    assert key(killed) == key(clean)
    order = np.argsort([p + str(i) for p, i in zip(killed.paths, killed.face_index)])
    order_clean = np.argsort([p + str(i) for p, i in zip(clean.paths, clean.face_index)])
    # detection and embedding are batched with the chunk's other photos (float rounding differs by batch)
    assert (killed.embeddings[order] * clean.embeddings[order_clean]).sum(1).min() > 0.99999


def test_analysing_workers_give_the_main_process_results(scanned, tmp_path):
    from dataclasses import replace

    service, photos, _ = scanned
    other = BatchService(Settings.resolve(db=str(tmp_path / "w.db")))
    report = other.scan([str(photos)], "w", replace(OPTIONS, workers=2, analyse_in_workers=True))
    a, b = service.store.faces(service.store.job_id("album")), other.store.faces(other.store.job_id("w"))
    key = lambda f: sorted(zip(f.paths, f.face_index.tolist()))  # noqa: E731
    assert report.errors == 1, report.error_samples
    assert key(a) == key(b)
    # boxes are stored to 0.1 px; detection batched with other photos moves them by float rounding only
    boxes = lambda f: np.asarray(f.boxes)[np.lexsort((f.face_index, f.paths))]  # noqa: E731
    assert np.abs(boxes(a) - boxes(b)).max() <= 0.1 + 1e-6
    ea = a.embeddings[np.lexsort((a.face_index, a.paths))]
    eb = b.embeddings[np.lexsort((b.face_index, b.paths))]
    # the same faces; embedding batches differ (the chunk vs the worker's task): float rounding only
    assert (ea * eb).sum(1).min() > 0.99999


def test_average_linkage_matches_sklearn_without_constraints(scanned):
    """With the k-NN graph complete, the graph method is exact average linkage: sklearn's must agree."""
    from sklearn.cluster import AgglomerativeClustering

    service, _, _ = scanned
    f = service.store.faces(service.store.job_id("album"))
    keep = [i for i in range(len(f)) if not f.paths[i].endswith("gul_twice.png")]
    threshold = 0.45
    ours = cluster(ClusterInput(f.ids[keep], [(f.sha256[i], int(f.face_index[i])) for i in keep],
                                f.embeddings[keep], f.file_ids[keep], [None] * len(keep)), threshold, k=len(keep))
    theirs = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=1 - threshold).fit_predict(f.embeddings[keep])
    assert partition(list(ours[int(f.ids[i])] for i in keep)) == partition(theirs.tolist())
    assert len(set(ours.values())) < len(keep)  # something was merged


def test_clustering_ignores_input_order(scanned):
    service, _, _ = scanned
    f = service.store.faces(service.store.job_id("album"))
    data = lambda order: ClusterInput(f.ids[order], [(f.sha256[i], int(f.face_index[i])) for i in order],  # noqa: E731
                                      f.embeddings[order], f.file_ids[order], [None] * len(order))
    base = cluster(data(list(range(len(f)))), 0.45, k=5)
    for seed in range(3):
        order = list(range(len(f)))
        random.Random(seed).shuffle(order)
        assert cluster(data(order), 0.45, k=5) == base


def test_cannot_link_must_link_and_names_survive_reclustering(scanned):
    service, _, _ = scanned
    job = "album"
    service.cluster(job, threshold=0.3)
    f = service.store.faces(service.store.job_id(job))
    per_photo = {}
    for file_id, c in zip(f.file_ids.tolist(), f.cluster.tolist()):
        per_photo.setdefault((file_id, c), 0)
        per_photo[(file_id, c)] += 1
    assert max(per_photo.values()) == 1  # two faces of one photo never share a cluster, even at a low threshold

    # name the Mauresmo cluster; force an Adam Sandler face into it (a must-link by name); reject another
    views = service.clusters(job)
    mauresmo = next(v for v in views if any("Amelie_Mauresmo" in f.paths[list(f.ids).index(i)] for i in v.faces))
    service.name(job, mauresmo.id, "Amelie Mauresmo", enroll=False)
    sandler = next(int(i) for i, p in zip(f.ids, f.paths) if "Adam_Sandler_0003" in p)
    service.store.name_faces(service.store.job_id(job), [sandler], "Amelie Mauresmo")
    rejected = mauresmo.faces[-1]
    service.reject(job, [rejected])
    for threshold in (0.6, 0.3, 0.45):  # re-cluster from scratch at other thresholds
        service.cluster(job, threshold=threshold)
        g = service.store.faces(service.store.job_id(job))
        by_id = dict(zip(g.ids.tolist(), range(len(g))))
        named = [i for i in range(len(g)) if g.person[i] == "Amelie Mauresmo"]
        assert {int(g.ids[i]) for i in named} == (set(mauresmo.faces) - {rejected}) | {sandler}
        assert len({int(g.cluster[i]) for i in named}) == 1  # must-link: the user's name holds them together
        assert g.cluster[by_id[rejected]] != g.cluster[named[0]]  # "not this person" remembered
        assert g.person[by_id[rejected]] is None


def test_merge_and_split_are_kept(scanned):
    service, _, _ = scanned
    job = "album"
    service.cluster(job, threshold=0.45)
    f = service.store.faces(service.store.job_id(job))
    of = lambda name: next(int(c) for c, p in zip(f.cluster, f.paths) if name in p)  # noqa: E731
    store, job_id = service.store, service.store.job_id(job)
    pair = [of("Aaron_Peirsol_0001"), of("Adam_Sandler_0001")]
    assert pair[0] != pair[1]
    members = store.cluster_faces(job_id, pair[0]) + store.cluster_faces(job_id, pair[1])
    service.merge(job, pair)
    gul = store.cluster_faces(job_id, of("Abdullah_Gul_0001"))
    moved = gul[:2]
    service.split(job, of("Abdullah_Gul_0001"), moved)
    for threshold in (0.6, 0.3):
        service.cluster(job, threshold=threshold)
        c = dict(zip(*(a.tolist() for a in (store.faces(job_id).ids, store.faces(job_id).cluster))))
        assert len({c[i] for i in members}) == 1  # merged: one person from now on
        assert c[moved[0]] == c[moved[1]]  # split off together
        assert all(c[moved[0]] != c[i] for i in gul[2:])  # and never back with the rest


def test_export_formats_agree(scanned, tmp_path):
    service, _, _ = scanned
    n = service.export("album", tmp_path / "faces.csv")
    service.export("album", tmp_path / "faces.jsonl")
    service.export("album", tmp_path / "faces.parquet")
    with open(tmp_path / "faces.csv") as fh:
        from_csv = list(csv.DictReader(fh))
    from_jsonl = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    import pyarrow.parquet as pq

    from_parquet = pq.read_table(tmp_path / "faces.parquet").to_pylist()
    assert len(from_csv) == len(from_jsonl) == len(from_parquet) == n
    assert [r["path"] for r in from_csv] == [r["path"] for r in from_jsonl] == [r["path"] for r in from_parquet]
    assert [r["face_id"] for r in from_jsonl] == [r["face_id"] for r in from_parquet]


def test_report_renders_in_headless_chromium(scanned, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    need(browser is not None, "no chromium (apt-get install -y chromium)")
    service, _, _ = scanned
    job = "album"
    service.cluster(job, threshold=0.45)
    views = [v for v in service.clusters(job) if v.size >= 2]
    service.name(job, views[0].id, "Named Person", enroll=False)
    html_path = service.report(job, tmp_path / "report.html")
    # a script the browser runs after loading: how many thumbnails really decoded
    html_path.write_text(html_path.read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{const im=[...document.images];"
                   "document.body.dataset.decoded=im.filter(i=>i.complete&&i.naturalWidth>0).length;"
                   "document.body.dataset.total=im.length;});</script></body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert 'data-name="Named Person"' in dom, out.stderr[-500:]
    assert 'class="cluster"' in dom and 'id="summary"' in dom
    shown = dom.count('class="face"')
    assert shown > 0
    assert f'data-decoded="{shown}"' in dom and f'data-total="{shown}"' in dom  # every thumbnail decoded


def partition(labels: list) -> set[frozenset[int]]:
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def test_xmp_sidecars_read_by_exiftool(scanned, tmp_path):
    """The sidecars' MWG regions as a real metadata reader (ExifTool, the Debian package) sees them."""
    exiftool = shutil.which("exiftool")
    need(exiftool is not None, "no exiftool (apt-get install -y libimage-exiftool-perl)")
    service, _, _ = scanned
    job_id = service.store.job_id("album")
    f = service.store.faces(job_id)
    face = next(i for i, p in enumerate(f.paths) if p.endswith("gul_twice.png"))
    service.store.name_faces(job_id, [int(f.ids[face])], "Abdullah Gül")
    written = service.xmp("album", tmp_path)
    sidecar = tmp_path / "gul_twice.png.xmp"
    assert sidecar in written
    out = subprocess.run([exiftool, "-j", "-struct", "-RegionInfo", str(sidecar)], capture_output=True, text=True)
    info = json.loads(out.stdout)[0]["RegionInfo"]
    assert info["AppliedToDimensions"] == {"W": 352, "H": 176, "Unit": "pixel"}
    (region,) = info["RegionList"]
    assert region["Name"] == "Abdullah Gül" and region["Type"] == "Face"
    x1, y1, x2, y2 = f.boxes[face]
    assert abs(region["Area"]["X"] - (x1 + x2) / 2 / 352) < 1e-5 and abs(region["Area"]["W"] - (x2 - x1) / 352) < 1e-5
