#!/usr/bin/env python3
"""Max abs error of facerec.train's chain port (PyTorch, float32) against facerec's ONNX Runtime session of the
same model folder, on real aligned crops (an `evaluate pairs --crop-cache` file), one thread each.

    python benchmarks/results/issue19_finetune/port_exactness.py pack/crops/crops-035dd611a0faf09814e3.npz \
        sface_2021dec sface_2021dec_ft_b
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from facerec.models.registry import get_model  # noqa: E402
from facerec.train.onnx_port import OnnxChainNet  # noqa: E402

torch.set_num_threads(1)
crops = np.load(sys.argv[1], allow_pickle=False)["crops"][:64]
out = {}
for model_id in sys.argv[2:]:
    model = get_model(model_id)
    model.ensure_loaded()
    x = model.preprocess(crops)
    reference = np.concatenate([model._embed(crops[i:i + 32]) for i in range(0, len(crops), 32)])
    net = OnnxChainNet.from_folder(model.folder).eval()
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    out[model_id] = {"crops": len(crops), "max_abs_error": float(np.abs(ours - reference).max()),
                     "max_abs_output": float(np.abs(reference).max())}
print(json.dumps(out, indent=1))
