"""`facerec evaluate pairs` (facerec.evaluation.pairs.evaluate_pairs, unchanged) with the embedding step spread over
K processes: same crops (from the crop cache), same embed(), same scoring and metrics; writes the same JSON and npz."""
import json, sys, multiprocessing as mp
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository

def work(args):
    model_id, crops, flip = args
    from facerec.models.registry import get_model
    return get_model(model_id).embed(crops, flip_fusion=flip)

if __name__ == '__main__':
    pairs_file, model_id, cache, k, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    import facerec.evaluation.pairs as P
    from facerec.api import evaluation_pipeline
    from facerec.evaluation.lfw_protocol import read_pairs
    pairs = read_pairs(pairs_file)
    pipeline = evaluation_pipeline(model=model_id)

    def embed_images(pipeline, paths, progress=None, cache_dir=None, batch=64):
        aligned = P.cached_alignment(pipeline, paths, cache_dir, progress)
        keys = list(aligned.crops)
        stack = np.stack([aligned.crops[k_] for k_ in keys])
        chunks = [stack[i::k] for i in range(k)]
        with mp.get_context('spawn').Pool(k) as pool:
            parts = pool.map(work, [(model_id, c, pipeline.flip_fusion) for c in chunks])
        vectors = np.zeros((len(keys), parts[0].shape[1]), np.float32)
        for i, part in enumerate(parts):
            vectors[i::k] = part
        return P.EmbeddedImages(dict(zip(keys, vectors)), aligned.relaxed, aligned.failed)

    P.embed_images = embed_images
    report, scores, labels = P.evaluate_pairs(pipeline, pairs, cache_dir=cache)
    Path(out + '.json').write_text(json.dumps(report.to_dict(), indent=2) + '\n')
    np.savez(out + '.npz', scores=scores, labels=labels, folds=np.array([p.fold for p in pairs]), model_id=report.model_id,
             scorer=report.scorer, flip=pipeline.flip_fusion)
    print(json.dumps({k_: v for k_, v in report.to_dict().items() if k_ != 'roc'}))
