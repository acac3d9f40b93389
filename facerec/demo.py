"""`facerec demo`: the whole one-shot path on public-domain photos that installed packages ship.

Eileen Collins (NASA, scikit-image's `astronaut`) and Grace Hopper (US Navy, matplotlib's sample data) are
enrolled from one photo each; new views of them (mirrored, rescaled, rotated, re-compressed) are identified
and verified, and scikit-image's `camera` man, never enrolled, must come out unknown. Any person folders
in ./enrollment/ are enrolled too, so a user can try their own photos.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from facerec.api import FaceRec
from facerec.config import Settings, default_home
from facerec.errors import FacerecError


def _shipped_photos() -> dict[str, Path]:
    import matplotlib
    import skimage

    skdata = Path(skimage.__file__).parent / "data"
    return {
        "Eileen Collins": skdata / "astronaut.png",
        "Grace Hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        "unknown": skdata / "camera.png",
    }


def new_view(src: Path, dst: Path, angle: float, scale: float) -> Path:
    """A different photo of the same face: mirrored, rotated, rescaled and re-encoded as JPEG."""
    im = Image.open(src).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.LANCZOS)
    im.save(dst, quality=80)
    return dst


def run_demo(workdir: Path | None, console) -> None:
    workdir = Path(workdir) if workdir else default_home() / "demo"
    if workdir.exists():
        shutil.rmtree(workdir)
    photos_dir = workdir / "photos"
    photos_dir.mkdir(parents=True)
    photos = _shipped_photos()
    settings = Settings.resolve(db=f"sqlite:///{workdir / 'demo.db'}", index=str(workdir / "demo.faiss"))
    fr = FaceRec(settings)
    console.print(f"demo database: {settings.db_url}  model: {fr.card.id}", markup=False)

    for name in ("Eileen Collins", "Grace Hopper"):
        result = fr.enroll(name, [photos[name]])
        console.print(f"enrolled {name!r} from one photo ({photos[name].name}): {result.added} template", markup=False)
    own = Path("enrollment")
    if own.is_dir() and any(p.is_dir() for p in own.iterdir()):
        for r in fr.enroll_from_dir(own):
            console.print(f"enrolled {r.name!r} from enrollment/: +{r.added} {'; '.join(r.errors)}", markup=False)

    probes = {
        "Eileen Collins": new_view(photos["Eileen Collins"], photos_dir / "collins_view.jpg", 9, 0.6),
        "Grace Hopper": new_view(photos["Grace Hopper"], photos_dir / "hopper_view.jpg", -7, 0.5),
        "unknown": photos["unknown"],
    }
    failures = []
    for expected, probe in probes.items():
        try:
            faces = fr.identify(probe, top_k=2).faces
        except FacerecError as exc:
            failures.append(str(exc))
            continue
        if not faces:
            console.print(f"identify {probe.name}: no face found", markup=False)
            if expected != "unknown":
                failures.append(f"{probe.name}: no face found")
            continue
        best = faces[0]
        console.print(f"identify {probe.name}: {best.name} (score {best.score:.3f}; expected {expected})", markup=False)
        if best.name != expected:
            failures.append(f"{probe.name}: got {best.name}, expected {expected}")

    same = fr.verify("Grace Hopper", probes["Grace Hopper"])
    other = fr.verify("Eileen Collins", probes["Grace Hopper"])
    console.print(f"verify 'Grace Hopper' on hopper_view.jpg: {'MATCH' if same.match else 'NO MATCH'} "
                  f"(score {same.score:.3f}, threshold {same.threshold:.3f})", markup=False)
    console.print(f"verify 'Eileen Collins' on hopper_view.jpg: {'MATCH' if other.match else 'NO MATCH'} "
                  f"(score {other.score:.3f})", markup=False)
    if not same.match or other.match:
        failures.append("verification gave the wrong answer")
    console.print(f"enrolled: {', '.join(p.name for p in fr.people())}", markup=False)
    fr.close()
    if failures:
        raise FacerecError("demo failed: " + "; ".join(failures))
    console.print("demo passed: real matches, an unknown rejected, all from one photo per person", markup=False)
