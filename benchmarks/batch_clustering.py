"""Clustering and identification quality of `facerec batch` on scanned jobs, beside sklearn's DBSCAN and a
re-implementation of Immich's incremental face-recognition rule, on the same embeddings.

    # 1. choose each method's threshold on CelebA (not LFW): the job of a `facerec batch scan` of celeba_wild
    python benchmarks/batch_clustering.py calibrate --db /tmp/celeba.db --job celeba [--write]
    # 1b. choose the constant of the size-aware rule (facerec.batch.thresholds) on archive-like collections
    #     drawn from the same CelebA job: long-tailed photos per person, many people seen once, several sizes
    python benchmarks/batch_clustering.py calibrate-scale --db /tmp/celeba.db --job celeba [--write]
    # 2. evaluate on the LFW job of benchmarks/lfw_batch_run.py (50 people enrolled, one photo each)
    python benchmarks/batch_clustering.py evaluate --db /tmp/lfw_batch.db --job lfw --run /tmp/lfw_batch.db.run.json

Ground truth: the photo's folder (LFW name, CelebA identity) for its *subject* face, the face nearest the
photo's centre (both sets are face-centred crops); other faces have no label: they take part in clustering
(and in the cannot-link check) but not in the scores. Unclustered faces count as singletons.
Metrics: pairwise and BCubed precision / recall / F over subject faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.api import Settings, models  # noqa: E402
from facerec.batch.cluster import ClusterInput, cluster  # noqa: E402
from facerec.batch.service import BatchService  # noqa: E402
from facerec.batch.thresholds import CLUSTER_FILE, cluster_threshold, scaled_threshold  # noqa: E402
from facerec.store.batch import FaceRows  # noqa: E402
from facerec.store.schema import BatchFaceEmbedding, BatchFile  # noqa: E402

IMMICH_DEFAULT = (0.5, 3)  # Immich's machine-learning defaults: maxDistance 0.5, minFaces 3
SWEEP = np.round(np.arange(0.30, 0.721, 0.02), 2)


# --- metrics ---------------------------------------------------------------------------------------
def pairwise(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    def pairs(counts) -> int:
        return int(sum(c * (c - 1) // 2 for c in counts))

    joint = {}
    for a, b in zip(labels.tolist(), truth.tolist()):
        joint[(a, b)] = joint.get((a, b), 0) + 1
    tp = pairs(joint.values())
    same_cluster = pairs(np.unique(labels, return_counts=True)[1])
    same_class = pairs(np.unique(truth, return_counts=True)[1])
    p = tp / same_cluster if same_cluster else 1.0
    r = tp / same_class if same_class else 1.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def bcubed(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    joint: dict = {}
    for a, b in zip(labels.tolist(), truth.tolist()):
        joint[(a, b)] = joint.get((a, b), 0) + 1
    csize = dict(zip(*np.unique(labels, return_counts=True)))
    tsize = dict(zip(*np.unique(truth, return_counts=True)))
    p = np.mean([joint[(a, b)] / csize[a] for a, b in zip(labels.tolist(), truth.tolist())])
    r = np.mean([joint[(a, b)] / tsize[b] for a, b in zip(labels.tolist(), truth.tolist())])
    return float(p), float(r), float(2 * p * r / (p + r))


# --- the peers --------------------------------------------------------------------------------------
def dbscan(emb: np.ndarray, eps: float, min_samples: int = 2) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(emb)
    out = labels.copy()
    noise = np.where(labels < 0)[0]
    out[noise] = labels.max() + 1 + np.arange(len(noise))  # noise: each face its own singleton
    return out


def immich(emb: np.ndarray, order: list[int], max_distance: float = 0.5, min_faces: int = 3,
           search: int = 200) -> np.ndarray:
    """Immich's rule (server person.service handleRecognizeFaces), faces taken in scan order:
    matches = the `min_faces` nearest faces within `max_distance` (the face itself included); a face with no
    match but itself is skipped; a non-core face (fewer than `min_faces` matches) waits for a second pass;
    a face joins the person of its first match that has one, else the person of the nearest face within
    `max_distance` that has one; a core face without such a person founds a new one. Nearest-with-person is
    searched among the `search` nearest faces (Immich asks the database for the single nearest)."""
    import faiss

    n = len(emb)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    sims, nbrs = index.search(emb, min(search, n))
    person = np.full(n, -1)
    next_person = 0

    def recognise(i: int, deferred: bool) -> bool:
        """False: deferred to the second pass."""
        nonlocal next_person
        within = [j for s, j in zip(sims[i], nbrs[i]) if j >= 0 and 1 - s <= max_distance]
        matches = within[:min_faces]
        if min_faces > 1 and len(matches) <= 1:
            return True  # no match but itself: skipped for good
        core = len(matches) >= min_faces
        if not core and not deferred:
            return False
        pid = next((person[j] for j in matches if person[j] >= 0), -1)
        if pid < 0:
            pid = next((person[j] for j in within if person[j] >= 0), -1)
        if core and pid < 0:
            pid, next_person = next_person, next_person + 1
        if pid >= 0:
            person[i] = pid
        return True

    later = [i for i in order if not recognise(i, deferred=False)]
    for i in later:
        recognise(i, deferred=True)
    out = person.copy()
    alone = np.where(person < 0)[0]
    out[alone] = next_person + np.arange(len(alone))
    return out


def ours(faces: FaceRows, rows: list[int], threshold: float, order: list[int] | None = None,
         pair_threshold: float | None = None) -> np.ndarray:
    order = order if order is not None else list(range(len(rows)))
    sel = [rows[o] for o in order]
    result = cluster(ClusterInput(faces.ids[sel], [(faces.sha256[i], int(faces.face_index[i])) for i in sel],
                                  faces.embeddings[sel], faces.file_ids[sel], [None] * len(sel)), threshold,
                     pair_threshold=pair_threshold)
    return np.array([result[int(faces.ids[i])] for i in rows])


# --- data -------------------------------------------------------------------------------------------
def load(db: Path, job: str) -> tuple[BatchService, FaceRows, np.ndarray, dict[int, tuple[int, int]]]:
    """The job's faces; which are the subject of their photo; photo sizes."""
    from sqlalchemy import select

    service = BatchService(Settings.resolve(db=str(db)))
    job_id = service.store.job_id(job)
    faces = service.store.faces(job_id)
    with service.fr.store.session() as s:
        sizes = {i: (w, h) for i, w, h in s.execute(select(BatchFile.id, BatchFile.width, BatchFile.height)
                                                   .where(BatchFile.job_id == job_id))}
    best: dict[int, tuple[float, int]] = {}
    for i in range(len(faces)):
        w, h = sizes[int(faces.file_ids[i])]
        x1, y1, x2, y2 = faces.boxes[i]
        d = ((x1 + x2) / 2 - w / 2) ** 2 + ((y1 + y2) / 2 - h / 2) ** 2
        f = int(faces.file_ids[i])
        if f not in best or d < best[f][0]:
            best[f] = (d, i)
    subject = np.zeros(len(faces), dtype=bool)
    subject[[i for _, i in best.values()]] = True
    return service, faces, subject, sizes


def staged_embeddings(service: BatchService, job: str, model: str, ids: np.ndarray) -> np.ndarray:
    """The job's faces' embeddings by `model` staged by `batch reembed --no-switch`, in `ids` order (every
    face must have one)."""
    from sqlalchemy import select

    with service.fr.store.session() as s:
        staged = dict(s.execute(select(BatchFaceEmbedding.face_id, BatchFaceEmbedding.embedding).where(
            BatchFaceEmbedding.job_id == service.store.job_id(job), BatchFaceEmbedding.model_id == model,
            BatchFaceEmbedding.embedding.is_not(None))).all())
    lacking = [int(i) for i in ids if int(i) not in staged]
    if lacking:
        sys.exit(f"{len(lacking)} faces have no staged {model} embedding (first: face {lacking[0]})")
    return np.stack([np.frombuffer(staged[int(i)], dtype="<f4") for i in ids]).astype(np.float32)


def truth_of(path: str) -> str:
    return Path(path).parent.name


def scores(labels: np.ndarray, truth: np.ndarray) -> dict:
    return {"pairwise": pairwise(labels, truth), "bcubed": bcubed(labels, truth), "clusters": len(set(labels.tolist()))}


def same_photo_clusters(labels: np.ndarray, files: np.ndarray) -> int:
    """Clusters holding two faces or more of one photo."""
    seen, bad = set(), set()
    for c, f in zip(labels.tolist(), files.tolist()):
        if (c, f) in seen:
            bad.add(c)
        seen.add((c, f))
    return len(bad)


def fmt(t: tuple) -> str:
    return " / ".join(f"{v:.4f}" for v in t)


# --- commands -----------------------------------------------------------------------------------------
def calibrate(args) -> None:
    service, faces, subject, _ = load(args.db, args.job)
    rows = [i for i in range(len(faces)) if subject[i]]
    truth = np.array([truth_of(faces.paths[i]) for i in rows])
    emb = faces.embeddings[rows]
    results = {"ours": {}, "dbscan": {}, "immich": {}}
    for t in SWEEP:
        results["ours"][float(t)] = bcubed(ours(faces, rows, float(t)), truth)[2]
        results["dbscan"][float(t)] = bcubed(dbscan(emb, 1 - float(t)), truth)[2]
        results["immich"][float(t)] = bcubed(immich(emb, list(range(len(rows))), 1 - float(t)), truth)[2]
    # the highest similarity within 0.005 of each method's best F: a real archive holds far more people
    # than this calibration set, so of near-equal thresholds the strictest is the safer one (same rule for all)
    best = {m: max(t for t, f in r.items() if f >= max(r.values()) - 0.005) for m, r in results.items()}
    print(f"CelebA calibration ({args.job}: {len(rows)} subject faces, {len(set(truth))} identities)")
    print("similarity | ours BCubed F | DBSCAN (eps = 1 - s, min_samples 2) | Immich (maxDistance = 1 - s, minFaces 3)")
    for t in SWEEP:
        t = float(t)
        print(f"{t:.2f} | {results['ours'][t]:.4f} | {results['dbscan'][t]:.4f} | {results['immich'][t]:.4f}")
    print("best:", json.dumps(best))
    out = {"job": args.job, "db": str(args.db), "faces": len(rows), "identities": len(set(truth)),
           "sweep": results, "best": best}
    Path(args.out).write_text(json.dumps(out, indent=2))
    if args.write:
        path = REPO / "facerec" / "data" / "batch_cluster.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[service.store.job_model(service.store.job_id(args.job))] = {
            "threshold": best["ours"],
            "provenance": f"highest threshold within 0.005 of the best BCubed F "
                          f"({results['ours'][best['ours']]:.4f} there) of a 0.30-0.72 sweep on "
                          f"{len(rows)} CelebA in-the-wild faces of {len(set(truth))} identities (celeba_wild, "
                          f"not LFW); benchmarks/batch_clustering.py calibrate",
        }
        path.write_text(json.dumps(data, indent=2) + "\n")


RATES = (0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)  # false edges per face, swept
# per-pair: every merge at the card's threshold at FAR r / N; size-aware: that bar for two single faces, the
# card's 1:1 threshold for large groups, group + (pair - group) / sqrt(|A||B|) between (facerec.batch.cluster)
VARIANTS = ("per-pair", "size-aware")
FIXED = tuple(float(t) for t in np.round(np.arange(0.30, 0.601, 0.02), 2))  # fixed thresholds beside (any model)
ZIPF = (1.6, 2.0, 2.6)  # photos-per-person tail exponents: P(1 photo) ~ 0.42, 0.61, 0.80
SHARES = (0.5, 1.0)  # share of the CelebA identities a collection holds
SEEDS = (0, 1, 2)


def archive_collections(truth: np.ndarray) -> list[tuple[str, list[int]]]:
    """Archive-like collections drawn from one labelled set: each person gets a Zipf-distributed number of
    photos (capped by what the set has), so most people appear once or twice and a few often; plus collections
    where a quarter of the people keep all their photos and the rest appear once, and the whole set."""
    people = sorted(set(truth.tolist()))
    rows_of = {p: [i for i in range(len(truth)) if truth[i] == p] for p in people}
    out = [("all photos", list(range(len(truth))))]
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for share in SHARES:
            chosen = sorted(rng.choice(people, int(round(share * len(people))), replace=False).tolist())
            for a in ZIPF:
                rows = []
                for p in chosen:
                    k = min(len(rows_of[p]), int(rng.zipf(a)))
                    rows += sorted(rng.choice(rows_of[p], k, replace=False).tolist())
                out.append((f"zipf {a}, {share:.0%} of people, seed {seed}", sorted(rows)))
            rows = []
            for j, p in enumerate(rng.permutation(chosen).tolist()):
                rows += rows_of[p] if j < len(chosen) // 4 else [int(rng.choice(rows_of[p]))]
            out.append((f"1/4 of people all photos, rest once, {share:.0%} of people, seed {seed}", sorted(rows)))
    return out


def family_optima(table: list[dict], fixed: tuple[float, ...], variant: str, chosen: float,
                  reference: float) -> list[dict]:
    """Per make-up (Zipf exponent or 'a quarter all photos') and share of people, over seeds: mean faces, the
    constant r and the fixed threshold with the best mean BCubed F, F at the chosen r and at the fixed
    threshold `reference` (the best one over all collections)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in table:
        parts = row["collection"].split(", ")
        if len(parts) < 3:
            continue
        groups.setdefault((", ".join(parts[:-2]), parts[-2].split()[0]), []).append(row)
    out = []
    for (family, share), rows in groups.items():
        f_rule = {r: float(np.mean([x[variant][str(r)]["bcubed_f"] for x in rows])) for r in RATES}
        f_fixed = {t: float(np.mean([x["fixed"][str(t)] for x in rows])) for t in fixed}
        out.append({"family": family, "share": share, "faces": float(np.mean([x["faces"] for x in rows])),
                    "best_rate": max(f_rule, key=f_rule.get), "best_fixed": max(f_fixed, key=f_fixed.get),
                    "f_chosen": f_rule[chosen], "f_fixed": f_fixed[reference]})
    return sorted(out, key=lambda f: (f["family"], f["faces"]))


def rule_labels(faces: FaceRows, rows: list[int], model: str, variant: str, rate: float) -> tuple[np.ndarray, float]:
    pair = scaled_threshold(model, len(rows), rate)[0]
    if variant == "per-pair":
        return ours(faces, rows, pair), pair
    group = float(next(c for c in models() if c.id == model).default_threshold)
    return ours(faces, rows, group, pair_threshold=max(pair, group)), pair


def calibrate_scale(args) -> None:
    """The rule of facerec.batch.thresholds and its constant: expected false edges per face r, pair threshold =
    the card's threshold at FAR r / N. Both variants and every r of RATES are run on the archive-like
    collections; the (variant, r) with the best mean BCubed F is chosen (the rule already tightens with N, so
    no extra strictness is added), the fixed thresholds of `calibrate` beside them."""
    service, faces, subject, _ = load(args.db, args.job)
    rows = [i for i in range(len(faces)) if subject[i]]
    truth = np.array([truth_of(faces.paths[i]) for i in rows])
    model = service.store.job_model(service.store.job_id(args.job))  # a re-embedded job's, not the database's
    collections = archive_collections(truth)
    table = []
    for label, sel in collections:
        sub = [rows[i] for i in sel]
        t = truth[sel]
        row = {"collection": label, "faces": len(sel), "people": len(set(t.tolist())),
               "singleton_people": int(sum(1 for c in np.unique(t, return_counts=True)[1] if c == 1)),
               "fixed": {str(x): bcubed(ours(faces, sub, x), t)[2] for x in FIXED}}
        for variant in VARIANTS:
            row[variant] = {}
            for r in RATES:
                labels, pair = rule_labels(faces, sub, model, variant, r)
                row[variant][str(r)] = {"pair_threshold": round(pair, 4), "bcubed_f": bcubed(labels, t)[2]}
        table.append(row)
        print(f"{label}: {row['faces']} faces, {row['people']} people ({row['singleton_people']} once); " + "; ".join(
            f"{v} " + ", ".join(f"{r}: {row[v][str(r)]['bcubed_f']:.4f}" for r in RATES) for v in VARIANTS), flush=True)
    mean = {v: {r: float(np.mean([x[v][str(r)]["bcubed_f"] for x in table])) for r in RATES} for v in VARIANTS}
    worst = {v: {r: float(np.min([x[v][str(r)]["bcubed_f"] for x in table])) for r in RATES} for v in VARIANTS}
    mean_fixed = {t: float(np.mean([x["fixed"][str(t)] for x in table])) for t in FIXED}
    variant, best = max(((v, r) for v in VARIANTS for r in RATES), key=lambda vr: mean[vr[0]][vr[1]])
    ref = max(mean_fixed, key=mean_fixed.get)  # the best fixed threshold, beside the rule
    print(f"\n{model}: {len(table)} collections from {args.job} ({len(rows)} faces, {len(set(truth.tolist()))} people): "
          f"faces {min(r['faces'] for r in table)}-{max(r['faces'] for r in table)}")
    print("| false edges per face r | per-pair mean / worst BCubed F | size-aware mean / worst | pair threshold at "
          "1,000 / 10,000 / 100,000 faces |")
    print("|---|---|---|---|")
    for r in RATES:
        ts = " / ".join(f"{scaled_threshold(model, n, r)[0]:.3f}" for n in (1_000, 10_000, 100_000))
        print(f"| {r} | {mean['per-pair'][r]:.4f} / {worst['per-pair'][r]:.4f} | {mean['size-aware'][r]:.4f} / "
              f"{worst['size-aware'][r]:.4f} | {ts} |")
    print("fixed thresholds, mean / worst BCubed F:", ", ".join(
        f"{t}: {f:.4f} / {min(x['fixed'][str(t)] for x in table):.4f}" for t, f in mean_fixed.items()))
    print(f"chosen: {variant}, r = {best} (mean F {mean[variant][best]:.4f})")
    # does the best constant stay put when a collection of one make-up grows (while the best fixed threshold
    # moves)? The rule's premise, checked within CelebA's sizes: one family = one make-up, seeds averaged
    families = family_optima(table, FIXED, variant, best, ref)
    print(f"| make-up | people | mean faces | best r ({variant}) | best fixed threshold | F at chosen r | F at fixed {ref} |")
    print("|---|---|---|---|---|---|---|")
    for f in families:
        print(f"| {f['family']} | {f['share']} | {f['faces']:.0f} | {f['best_rate']} | {f['best_fixed']} "
              f"| {f['f_chosen']:.4f} | {f['f_fixed']:.4f} |")
    out = {"job": args.job, "db": str(args.db), "model": model, "faces": len(rows),
           "identities": len(set(truth.tolist())), "collections": table, "mean": mean, "worst": worst,
           "mean_fixed": mean_fixed, "best_fixed": ref, "chosen": {"variant": variant, "false_edges_per_face": best},
           "families": families}
    Path(args.out).write_text(json.dumps(out, indent=2))
    if args.write:
        data = json.loads(CLUSTER_FILE.read_text()) if CLUSTER_FILE.is_file() else {}
        data[model] = {
            "rule": variant,
            "false_edges_per_face": best,
            "provenance": f"{variant} rule, pair threshold = the card's threshold at FAR r / N (N faces clustered); "
                          f"r = {best}: the best mean BCubed F ({mean[variant][best]:.4f}; best fixed threshold "
                          f"{ref}: {mean_fixed[ref]:.4f}) of both rules and r in {min(RATES)}-{max(RATES)} over "
                          f"{len(table)} archive-like collections ({min(r['faces'] for r in table)}-"
                          f"{max(r['faces'] for r in table)} faces, Zipf photos per person, many people once) drawn "
                          f"from {len(rows)} CelebA in-the-wild faces of {len(set(truth.tolist()))} identities "
                          f"(celeba_wild, not LFW); benchmarks/batch_clustering.py calibrate-scale, "
                          f"{Path(args.out).as_posix()}",
        }
        CLUSTER_FILE.write_text(json.dumps(data, indent=2) + "\n")


def evaluate(args) -> None:
    service, faces, subject, _ = load(args.db, args.job)
    run = json.loads(Path(args.run).read_text()) if args.run else {}
    enrolled = {n.replace("_", " ") for n in run.get("enrolled", [])}
    calib = json.loads(Path(args.calibration).read_text())["best"] if args.calibration else {}
    n = len(faces)
    report: dict = {"faces": n, "photos": len(set(faces.file_ids.tolist())), "subject_faces": int(subject.sum())}

    # the 1:K decision re-made at the engine's operating point now in force (gallery-aware unless an
    # identification calibration is stored), by searching the job's stored embeddings in its gallery again
    point = service.fr.operating_point("identification")
    best = [row[0] if row else None for row in service.fr.gallery.search(faces.embeddings, 1)]
    stored_match = list(faces.match)
    if not args.as_scanned:
        faces.match[:] = [m.name if m is not None and m.score >= point.threshold else None for m in best]
    report["identification_threshold"] = {"threshold": point.threshold, "source": point.source,
                                          "as_scanned": bool(args.as_scanned),
                                          "faces_named_at_scan": sum(m is not None for m in stored_match),
                                          "faces_named_now": sum(m is not None for m in faces.match)}

    # identification of the 50 enrolled people: probes are their photos other than the enrolled one
    enrol_photo = {f"{name.replace(' ', '_')}_0001.jpg" for name in enrolled}
    probe_rows = [i for i in range(n) if subject[i] and Path(faces.paths[i]).name not in enrol_photo]
    mated = [i for i in probe_rows if truth_of(faces.paths[i]).replace("_", " ") in enrolled]
    named = [i for i in probe_rows if faces.match[i] is not None]
    correct = [i for i in named if faces.match[i] == truth_of(faces.paths[i]).replace("_", " ")]
    non_mated_named = [i for i in named if truth_of(faces.paths[i]).replace("_", " ") not in enrolled]
    background_named = [i for i in range(n) if not subject[i] and faces.match[i] is not None]
    report["identification"] = {
        "enrolled": len(enrolled), "mated_probes": len(mated),
        "recall": sum(faces.match[i] == truth_of(faces.paths[i]).replace("_", " ") for i in mated) / max(1, len(mated)),
        "precision": len(correct) / max(1, len(named)), "named": len(named),
        "non_mated_probes": len(probe_rows) - len(mated), "non_mated_named": len(non_mated_named),
        "background_faces_named": len(background_named),
    }

    # clustering of the rest: every unknown face clustered, subject faces scored
    model = service.store.job_model(service.store.job_id(args.job))
    if args.embeddings:  # another model's staged embeddings (`batch reembed --no-switch`) for the same faces
        model = args.embeddings
        faces = dataclasses.replace(faces, embeddings=staged_embeddings(service, args.job, model, faces.ids))
    unknown = [i for i in range(n) if faces.match[i] is None]
    scored = [k for k, i in enumerate(unknown) if subject[i]]
    truth = np.array([truth_of(faces.paths[unknown[k]]) for k in scored])
    emb = faces.embeddings[unknown]
    files = faces.file_ids[unknown]
    rule = cluster_threshold(model, len(unknown))
    t_ours = args.threshold or rule.threshold
    pair = None if args.threshold else rule.pair_threshold
    report["clustering_threshold"] = {"model": model, "threshold": t_ours, "pair_threshold": pair,
                                      "source": "--threshold" if args.threshold else rule.source}
    t_db = calib.get("dbscan", t_ours)
    t_im = calib.get("immich", 1 - IMMICH_DEFAULT[0])
    methods = {
        f"facerec (avg-linkage, s >= {t_ours:.2f}" + (f", single faces {pair:.2f})" if pair else ")"):
            lambda order: ours(faces, unknown, t_ours, order, pair),
        f"sklearn DBSCAN (eps {1 - t_db:.2f}, min_samples 2)": lambda order: _reorder(dbscan, emb, order, 1 - t_db),
        f"Immich rule (maxDistance {1 - t_im:.2f}, minFaces 3)": lambda order: immich(emb, order or list(range(len(unknown))), 1 - t_im),
        "Immich rule (defaults 0.5, 3)": lambda order: immich(emb, order or list(range(len(unknown))), *IMMICH_DEFAULT),
    }
    report["clustering"] = {"unknown_faces": len(unknown), "scored_faces": len(scored),
                            "identities": len(set(truth.tolist())), "methods": {}}
    for name, method in methods.items():
        t0 = time.perf_counter()
        labels = method(None)
        seconds = time.perf_counter() - t0
        row = scores(labels[scored], truth) | {"same_photo_clusters": same_photo_clusters(labels, files),
                                               "seconds": round(seconds, 2)}
        fs = []
        for seed in range(5):  # shuffled scan orders: the same faces presented in another order
            order = list(range(len(unknown)))
            random.Random(seed).shuffle(order)
            fs.append(bcubed(method(order)[scored], truth)[2])
        row["bcubed_f_shuffled"] = fs
        row["bcubed_f_spread"] = max(fs) - min(fs)
        report["clustering"]["methods"][name] = row
    # diagnostics, not choices (the thresholds above come from CelebA): how each answer moves with its threshold
    report["diagnostic_sweep_on_lfw"] = {
        "clustering_bcubed_f": {f"{t:.2f}": bcubed(ours(faces, unknown, float(t))[scored], truth)[2]
                                for t in np.round(np.arange(0.28, 0.761, 0.04), 2)},
        "identification": {f"{t:.2f}": identification_at(faces, probe_rows, mated, enrolled, float(t))
                           for t in (0.4487, 0.50, 0.55, 0.60)},
    }
    print_report(report)
    if run:
        report["run"] = {k: v for k, v in run.items() if k not in ("enrolled", "roots")}
    Path(args.out).write_text(json.dumps(report, indent=2, default=float))


def identification_at(faces: FaceRows, probes: list[int], mated: list[int], enrolled: set[str], t: float) -> dict:
    """Precision / recall of the 50 people had the identification threshold been `t` (from stored scores)."""
    def name(i: int) -> str | None:
        best = faces.candidates[i][0] if faces.candidates[i] else None
        return best["name"] if best and best["score"] >= t else None

    named = [i for i in probes if name(i)]
    correct = sum(name(i) == truth_of(faces.paths[i]).replace("_", " ") for i in named)
    recall = sum(name(i) == truth_of(faces.paths[i]).replace("_", " ") for i in mated) / max(1, len(mated))
    return {"precision": correct / max(1, len(named)), "recall": recall, "named": len(named)}


def _reorder(fn, emb: np.ndarray, order: list[int] | None, *a) -> np.ndarray:
    """Run an order-sensitive method on faces in `order`, labels back in the original order."""
    if order is None:
        return fn(emb, *a)
    out = np.empty(len(emb), dtype=np.int64)
    out[order] = fn(emb[order], *a)
    return out


def print_report(r: dict) -> None:
    ident = r["identification"]
    print(f"{r['faces']} faces in {r['photos']} photos ({r['subject_faces']} subject faces)")
    t = r["identification_threshold"]
    print(("1:K answers as stored by the scan; today's threshold would be" if t["as_scanned"] else "1:K threshold")
          + f" {t['threshold']:.4f} ({t['source']}); faces named at scan {t['faces_named_at_scan']}, now "
          f"{t['faces_named_now']}")
    c = r["clustering_threshold"]
    print(f"clustering threshold ({c.get('model')} embeddings) {c['threshold']:.4f} ({c['source']})")
    print(f"identification of {ident['enrolled']} enrolled people: recall {ident['recall']:.4f} over "
          f"{ident['mated_probes']} mated probes; precision {ident['precision']:.4f} over {ident['named']} faces "
          f"named; {ident['non_mated_named']} of {ident['non_mated_probes']} non-mated probes named; "
          f"{ident['background_faces_named']} background faces named")
    c = r["clustering"]
    print(f"clustering: {c['unknown_faces']} unknown faces, {c['scored_faces']} scored, {c['identities']} identities")
    print("| method | pairwise P / R / F | BCubed P / R / F | clusters | 2 faces of 1 photo | BCubed F spread (5 orders) | s |")
    print("|---|---|---|---|---|---|---|")
    for name, m in c["methods"].items():
        print(f"| {name} | {fmt(m['pairwise'])} | {fmt(m['bcubed'])} | {m['clusters']} | {m['same_photo_clusters']} "
              f"| {m['bcubed_f_spread']:.4f} | {m['seconds']} |")
    d = r["diagnostic_sweep_on_lfw"]
    print("diagnostic (not a choice): facerec BCubed F on LFW by threshold:",
          ", ".join(f"{t}: {f:.4f}" for t, f in d["clustering_bcubed_f"].items()))
    print("diagnostic: identification precision / recall at other thresholds (stored scores):",
          "; ".join(f"{t}: {v['precision']:.4f} / {v['recall']:.4f}" for t, v in d["identification"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate")
    c.add_argument("--db", type=Path, required=True)
    c.add_argument("--job", required=True)
    c.add_argument("--write", action="store_true", help="write the chosen threshold to facerec/data/batch_cluster.json")
    c.add_argument("--out", default="benchmarks/results/batch_cluster_calibration.json")
    cs = sub.add_parser("calibrate-scale")
    cs.add_argument("--db", type=Path, required=True)
    cs.add_argument("--job", required=True)
    cs.add_argument("--write", action="store_true", help="write the chosen constant to facerec/data/batch_cluster.json")
    cs.add_argument("--out", default="benchmarks/results/batch_cluster_scale.json")
    e = sub.add_parser("evaluate")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--job", required=True)
    e.add_argument("--run", help="the .run.json of benchmarks/lfw_batch_run.py")
    e.add_argument("--calibration", default="benchmarks/results/batch_cluster_calibration.json")
    e.add_argument("--threshold", type=float)
    e.add_argument("--embeddings", metavar="MODEL",
                   help="cluster with MODEL's embeddings staged by `batch reembed --no-switch` (1:K answers stay "
                        "those of the job's model and gallery)")
    e.add_argument("--as-scanned", action="store_true",
                   help="keep the 1:K answers stored by the scan instead of re-deciding at today's operating point")
    e.add_argument("--out", default="benchmarks/results/batch_clustering_lfw.json")
    args = ap.parse_args()
    {"calibrate": calibrate, "calibrate-scale": calibrate_scale, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
