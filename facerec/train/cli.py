"""Command line: `python -m facerec.train {cache,fit} ...` (`main(argv)` for wrapping as `facerec train`).

    # once, on a machine with facenet-pytorch + OpenCV (the CPU box): detect, align, store
    python -m facerec.train cache --source ../shared/data/faces/celeba_wild --model dlib_resnet29 \
        --out .cache/crops/dlib_resnet29 [--limit-identities 10]

    # anywhere with torch + numpy (the GPU box): train on the cache
    python -m facerec.train fit --cache .cache/crops/dlib_resnet29 --out out/train/run1 --loss both --epochs 30
    # any base model by id (its card's runtime picks the network), e.g. SFace (scripts/gpu_finetune_sface.sh)
    python -m facerec.train fit --cache .cache/crops/sface_2021dec --base-model sface_2021dec --out out/train/sface

Every `fit` option mirrors a field of `facerec.train.loop.TrainConfig` (`--config run.json` loads a JSON of
fields first; flags override it). Booleans take `--x/--no-x`; `--augment-option key=value` overrides one
AugmentConfig field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("FACEREC_DATA", REPO.parent / "shared" / "data"))

HELP = {
    "cache": "crop cache folder (made by `python -m facerec.train cache`)",
    "out": "run folder (checkpoints, metrics.jsonl, export/)",
    "base_model": "model id under facerec/weights/ whose card gives template, normalisation, weights ('' for none)",
    "backbone": "auto (by the base model's runtime: dlib_resnet29 or onnx, e.g. sface_2021dec) | dlib_resnet29 | onnx | tiny",
    "init": "pretrained | scratch | path to weights (.npz of the dlib port, or a facerec.train .pt checkpoint)",
    "freeze_until": "freeze this backbone stage and all earlier ones (dlib: stem res32 res64 res128 res256 "
                    "res256_out fc; 'all' = train the ArcFace head only)",
    "loss": "triplet | arcface | both",
    "mining": "batch_hard | semi_hard | all",
    "distance": "euclidean (chord on unit vectors) | cosine",
    "optimizer": "adamw | sgd",
    "amp": "auto | bf16 | fp16 | none",
    "early_stop": "eer | auc (validation metric for best checkpoint and early stopping)",
    "resume": "path to last.pt, or 'auto'",
    "export_dtype": "dlib: int12 | int10 | int8 | float16 | float32; onnx: int8 | float16 (default: the backbone's)",
    "holdout_pairs": "LFW-format pairs file whose --holdout-folds identities never reach training or validation",
    "holdout_folds": "folds of --holdout-pairs to hold out, e.g. 6-10",
}


def _optional_str(text: str) -> str:
    """'none' / 'null' / '' mean None (turned into None after parsing; None itself means 'flag not given')."""
    return "" if text.lower() in ("", "none", "null") else text


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from facerec.train.loop import TrainConfig

    for f in fields(TrainConfig):
        if f.name == "augment_options":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        default = None  # unset flags leave the config (file or dataclass default) alone
        shown = f.default if f.default is not MISSING else "required"
        help_text = f"{HELP.get(f.name, '')} (default: {shown})".strip()
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, default=default, help=help_text)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=_optional_str, default=default, help=help_text)
    parser.add_argument("--augment-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override one AugmentConfig field, e.g. --augment-option flip=0.5")


def _augment_options(pairs: list[str]) -> dict:
    from facerec.train.data import AugmentConfig

    known = {f.name: f for f in fields(AugmentConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in known:
            raise SystemExit(f"unknown augment option {key!r} (known: {', '.join(known)})")
        parsed = json.loads(value) if value.strip()[:1] in "[(0123456789.-" else value
        out[key] = tuple(parsed) if isinstance(parsed, list) else float(parsed)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m facerec.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cache", help="detect + align every photo once into a crop cache (needs OpenCV, facenet)")
    c.add_argument("--source", type=Path, default=DEFAULT_DATA / "faces" / "celeba_wild",
                   help="folder of <identity>/<photo> (default: $FACEREC_DATA/faces/celeba_wild)")
    c.add_argument("--out", type=Path, default=None, help="cache folder (default: .cache/crops/<model>)")
    c.add_argument("--model", default="dlib_resnet29", help="model id: its template is used for alignment")
    c.add_argument("--model-folder", type=Path, default=None, help="a model folder outside facerec/weights")
    c.add_argument("--limit-identities", type=int, default=None, help="only the first N identities (sorted)")
    c.add_argument("--max-per-identity", type=int, default=None, help="only the first M photos of each identity")
    c.add_argument("--encoding", choices=["jpeg", "raw"], default="jpeg",
                   help="jpeg (default: compact enough to carry to the GPU box) or raw uint8 N x H x W x 3")
    c.add_argument("--jpeg-quality", type=int, default=90)
    c.add_argument("--shard-mib", type=float, default=30.0, help="largest shard size")
    c.add_argument("--min-score", type=float, default=0.9, help="detector score filter (as inference)")
    c.add_argument("--min-face-size", type=float, default=20.0, help="smallest face side in px (as inference)")
    c.add_argument("--workers", type=int, default=1, help="detection processes (each with --threads threads)")
    c.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: more is slower on a busy machine)")
    c.add_argument("--holdout-pairs", type=Path, default=None,
                   help="LFW-format pairs file whose --holdout-folds identities are left out of the cache (a test set)")
    c.add_argument("--holdout-folds", default=None, help="folds of --holdout-pairs, e.g. 6-10")
    c.add_argument("--quiet", action="store_true")

    f = sub.add_parser("fit", help="train / fine-tune on a crop cache")
    f.add_argument("--config", type=Path, default=None, help="JSON file of TrainConfig fields")
    _add_config_options(f)
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cache":
        from facerec.train.data import build_crop_cache, pairs_identities

        if bool(args.holdout_pairs) != bool(args.holdout_folds):
            print("cache: --holdout-pairs and --holdout-folds go together", file=sys.stderr)
            return 2
        held_out = pairs_identities(args.holdout_pairs, args.holdout_folds) if args.holdout_pairs else []
        out = args.out or REPO / ".cache" / "crops" / args.model
        meta = build_crop_cache(
            args.source, out, model_id=args.model, model_folder=args.model_folder,
            limit_identities=args.limit_identities, max_per_identity=args.max_per_identity,
            encoding=args.encoding, jpeg_quality=args.jpeg_quality, shard_mib=args.shard_mib,
            min_score=args.min_score, min_face_size=args.min_face_size, progress=not args.quiet,
            workers=args.workers, threads=args.threads, exclude_identities=held_out,
        )
        print(json.dumps({"out": str(out), "n_images": meta["n_images"], "n_failures": meta["n_failures"],
                          "identities": len(meta["identities"]), "shards": len(meta["shards"]),
                          "total_bytes": meta["total_bytes"], "build_seconds": meta.get("build_seconds")}))
        return 0

    from facerec.train.loop import TrainConfig, train

    raw = json.loads(args.config.read_text()) if args.config else {}
    for fld in fields(TrainConfig):
        value = getattr(args, fld.name, None)
        if fld.name != "augment_options" and value is not None:
            raw[fld.name] = value
    if args.augment_option:
        raw["augment_options"] = {**raw.get("augment_options", {}), **_augment_options(args.augment_option)}
    if args.quiet:
        raw["progress"] = False
    if "cache" not in raw:
        print("fit: --cache is required", file=sys.stderr)
        return 2
    for key in ("base_model", "freeze_until", "resume", "export_id", "base_model_folder", "export_dtype",
                "holdout_pairs", "holdout_folds"):
        if raw.get(key) == "":
            raw[key] = None
    result = train(TrainConfig.from_dict(raw))
    summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
