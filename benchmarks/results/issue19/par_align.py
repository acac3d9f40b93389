"""Fill the evaluate-pairs crop cache for one pairs file with K detector processes (same key, same content)."""
import hashlib, json, os, sys, multiprocessing as mp
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository

def work(args):
    model, chunk = args
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.pairs import align_images
    a = align_images(evaluation_pipeline(model=model), [Path(p) for p in chunk])
    return a.crops, a.relaxed, a.failed

if __name__ == '__main__':
    pairs_file, model, cache, k = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.lfw_protocol import read_pairs
    from facerec.evaluation.pairs import RELAXED_SCORE, RELAXED_SIZE
    pairs = read_pairs(pairs_file)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    pipeline = evaluation_pipeline(model=model)
    key = hashlib.sha256(json.dumps({
        "template": pipeline.model.template.points, "size": [pipeline.model.template.width, pipeline.model.template.height],
        "detector": [pipeline.min_score, pipeline.min_size, RELAXED_SCORE, RELAXED_SIZE],
        "paths": [str(p) for p in paths]}).encode()).hexdigest()[:20]
    chunks = [[str(p) for p in paths[i::k]] for i in range(k)]
    with mp.get_context('spawn').Pool(k) as pool:
        parts = pool.map(work, [(model, c) for c in chunks])
    crops, relaxed, failed = {}, [], []
    for c, r, f in parts:
        crops.update(c); relaxed += r; failed += f
    found = [p for p in paths if p in crops]
    relaxed = [p for p in paths if p in set(relaxed)]; failed = [p for p in paths if p in set(failed)]
    file = cache / f"crops-{key}.npz"; tmp = file.with_suffix('.tmp.npz')
    np.savez(tmp, found=np.array([str(p) for p in found]), crops=np.stack([crops[p] for p in found]),
             relaxed=np.array([str(p) for p in relaxed]), failed=np.array([str(p) for p in failed]))
    os.replace(tmp, file)
    print(file, len(found), 'relaxed', len(relaxed), 'failed', len(failed))
