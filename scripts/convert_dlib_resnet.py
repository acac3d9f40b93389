#!/usr/bin/env python3
"""Convert dlib's face-recognition ResNet-29 weights from a registry package into facerec's npz.

Two sources are supported; the shipped weights come from (b), dlib's own float32 weights:

(b) PyPI `face-recognition-models==0.3.0` (CC0 weights, by Davis King / dlib):
        pip download --no-deps face-recognition-models==0.3.0 -d /tmp/frm
        cd /tmp/frm && tar xzf face_recognition_models-0.3.0.tar.gz
        python scripts/convert_dlib_resnet.py dlib \
            /tmp/frm/face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat \
            facerec/weights/dlib_resnet29/dlib_resnet29_int12.npz --dtype int12
    (an installed `face_recognition_models` package holds the same file under site-packages).

(a) npm `@vladmandic/face-api@1.7.15` (MIT package; uint8-quantised tfjs copy of the same weights):
        cd /tmp && npm pack @vladmandic/face-api@1.7.15 && mkdir faceapi && tar xzf vladmandic-face-api-1.7.15.tgz -C faceapi
        python scripts/convert_dlib_resnet.py faceapi /tmp/faceapi/package/model /tmp/faceapi_resnet.npz

Output: an npz (numpy arrays only, no pickle; deflate; fixed zip timestamps, so the bytes and sha256 are
reproducible) keyed by `DlibResNet29`'s state-dict names. With `--dtype int12` (the default, what is shipped)
each convolution / fc weight is stored as per-output-channel symmetric 12-bit integers in int16 (`<name>.q`)
plus float32 scales (`<name>.scale`, value = q * scale; int8 for `--dtype int8`); the per-channel affine scales
and biases stay float32. `--dtype float16` and `float32` store every tensor as that float type. The sha256 and
size of the output are printed.

The dlib reader follows dlib's serialisation (dlib/serialize.h, dlib/dnn/tensor.h, layers.h): integers are a
control byte (low nibble = byte count, bit 7 = sign) then little-endian bytes; strings are an integer length then
the bytes; a tensor is version (2), num_samples, k, nr, nc, then raw little-endian float32 values. The network
is stored from the input layer outwards; each `con_4` layer is its name, its params tensor (filters in
num_filters x k x nr x nc order, then the biases) and then num_filters, nr, nc, stride_y, stride_x, padding_y,
padding_x; each `affine_` is its name and params (gamma then beta); `fc_2` is its name, num_outputs, num_inputs
and params (num_inputs x num_outputs, no bias row for fc_no_bias). Layer geometry read from the file is checked
against the port's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facerec.models.dlib_resnet import BLOCKS, MEAN_RGB  # noqa: E402
from facerec.models.dlib_resnet import quantise
from facerec.npzfile import write_npz

# (state-dict prefix, in channels, out channels, kernel, stride, padding) for the 29 con+affine pairs, in order.
CONV_LAYERS: list[tuple[str, int, int, int, int, int]] = [("stem", 3, 32, 7, 2, 0)]
DOWN = {name: down for name, _, _, down in BLOCKS}
for _name, _cin, _cout, _down in BLOCKS:
    CONV_LAYERS.append((f"blocks.{_name}.conv1", _cin, _cout, 3, 2 if _down else 1, 0 if _down else 1))
    CONV_LAYERS.append((f"blocks.{_name}.conv2", _cout, _cout, 3, 1, 1))


# ------------------------------------------------------------------------------------------------ dlib (.dat)
class DlibReader:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.p = 0

    def int(self) -> int:
        c = self.d[self.p]
        n = c & 0x0F
        value = int.from_bytes(self.d[self.p + 1 : self.p + 1 + n], "little")
        self.p += 1 + n
        return -value if c & 0x80 else value

    def float(self) -> float:
        """dlib's portable float: an integer mantissa and an int16 exponent, value = mantissa * 2**exponent."""
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        n = self.int()
        s = self.d[self.p : self.p + n].decode("latin-1")
        self.p += n
        return s

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unknown dlib tensor version {version} at byte {self.p}")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        a = np.frombuffer(self.d, dtype="<f4", count=count, offset=self.p).astype(np.float32).reshape(shape)
        self.p += 4 * count
        return a

    def seek_layer(self, names: tuple[str, ...]) -> str:
        """Move to the next serialised layer whose type string is one of `names` (only metadata lies between)."""
        pattern = re.compile(b"|".join(re.escape(bytes([1, len(n)]) + n.encode()) for n in names))
        m = pattern.search(self.d, self.p)
        if m is None:
            raise ValueError(f"no further layer among {names} after byte {self.p}")
        self.p = m.start()
        return self.string()


def read_dlib(path: Path) -> dict[str, np.ndarray]:
    r = DlibReader(path.read_bytes())
    if r.int() != 1 or r.string() != "loss_metric_2":
        raise ValueError("not a dlib loss_metric network")
    r.seek_layer(("input_rgb_image_sized",))
    mean = [r.float() for _ in range(3)]
    size = [r.int(), r.int()]
    if size != [150, 150] or not np.allclose(mean, MEAN_RGB, atol=1e-4):
        raise ValueError(f"input layer: mean {mean}, size {size}")
    state: dict[str, np.ndarray] = {}
    for prefix, cin, cout, k, stride, pad in CONV_LAYERS:
        r.seek_layer(("con_4",))
        params = r.tensor().reshape(-1)
        geometry = [r.int() for _ in range(7)]  # num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x
        if geometry != [cout, k, k, stride, stride, pad, pad]:
            raise ValueError(f"{prefix}: dlib con_ geometry {geometry} != expected {[cout, k, k, stride, stride, pad, pad]}")
        n_w = cout * cin * k * k
        if params.size != n_w + cout:
            raise ValueError(f"{prefix}: {params.size} params, expected {n_w + cout}")
        weight = params[:n_w].reshape(cout, cin, k, k)
        conv_bias = params[n_w:]
        r.seek_layer(("affine_",))
        ab = r.tensor().reshape(-1)
        if ab.size != 2 * cout:
            raise ValueError(f"{prefix}: affine has {ab.size} params, expected {2 * cout}")
        gamma, beta = ab[:cout], ab[cout:]
        state[f"{prefix}.conv.weight"] = weight
        state[f"{prefix}.affine.weight"] = gamma
        # fold the convolution's bias into the affine bias, in float64, rounded once
        state[f"{prefix}.affine.bias"] = (gamma.astype(np.float64) * conv_bias + beta).astype(np.float32)
        # pooling geometry: nr, nc, stride_y, stride_x, padding_y, padding_x (unpadded, as the port assumes)
        if prefix == "stem":
            r.seek_layer(("max_pool_2",))
            if (g := [r.int() for _ in range(6)]) != [3, 3, 2, 2, 0, 0]:
                raise ValueError(f"max_pool geometry {g}")
        elif prefix.endswith(".conv2") and stride == 1 and DOWN[prefix.split(".")[1]]:
            r.seek_layer(("avg_pool_2",))  # the shortcut of a down block, serialised after its conv branch
            if (g := [r.int() for _ in range(6)]) != [2, 2, 2, 2, 0, 0]:
                raise ValueError(f"{prefix}: avg_pool geometry {g}")
    r.seek_layer(("fc_2",))
    num_outputs, num_inputs = r.int(), r.int()
    fc = r.tensor()
    if (num_outputs, num_inputs) != (128, 256) or fc.shape != (256, 128, 1, 1):
        raise ValueError(f"fc_2: outputs {num_outputs}, inputs {num_inputs}, params {fc.shape}")
    state["fc.weight"] = np.ascontiguousarray(fc.reshape(256, 128).T)
    return state


# ------------------------------------------------------------------------------------------------ face-api (tfjs)
FACEAPI_PREFIX = {"stem": "conv32_down"}
for _name, *_ in BLOCKS:
    FACEAPI_PREFIX[_name] = "conv" + _name[len("res") :]


def read_faceapi(model_dir: Path) -> dict[str, np.ndarray]:
    manifest = json.loads((model_dir / "face_recognition_model-weights_manifest.json").read_text())
    tensors: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"]))
            q = w.get("quantization")
            if q:
                if q["dtype"] != "uint8":
                    raise ValueError(f"unsupported quantisation {q}")
                raw = np.frombuffer(blob, dtype=np.uint8, count=count, offset=offset)
                value = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                offset += count
            else:
                value = np.frombuffer(blob, dtype="<f4", count=count, offset=offset).astype(np.float32)
                offset += 4 * count
            tensors[w["name"]] = value.reshape(w["shape"])
    state: dict[str, np.ndarray] = {}
    for prefix, *_ in CONV_LAYERS:
        if prefix == "stem":
            src = "conv32_down"
        else:
            _, block, conv = prefix.split(".")
            src = f"{FACEAPI_PREFIX[block]}/{conv}"
        w = tensors[f"{src}/conv/filters"]  # HWIO
        cb = tensors[f"{src}/conv/bias"]
        gamma = tensors[f"{src}/scale/weights"]
        beta = tensors[f"{src}/scale/biases"]
        state[f"{prefix}.conv.weight"] = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
        state[f"{prefix}.affine.weight"] = gamma
        state[f"{prefix}.affine.bias"] = (gamma.astype(np.float64) * cb + beta).astype(np.float32)
    state["fc.weight"] = np.ascontiguousarray(tensors["fc"].T)
    return state


# ------------------------------------------------------------------------------------------------ storage
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", choices=["dlib", "faceapi"], help="dlib: the .dat file; faceapi: the model folder")
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--dtype", choices=["float32", "float16", "int8", "int10", "int12"], default="int12")
    args = ap.parse_args(argv)
    state = read_dlib(args.input) if args.source == "dlib" else read_faceapi(args.input)
    arrays = quantise(state, args.dtype)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.output, arrays, compresslevel=9)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, {len(arrays)} arrays)")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
