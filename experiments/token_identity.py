"""Can the frozen encoder's tokens tell a graph's objects apart? `python experiments/token_identity.py <run dir>`

Issue 16's "token identity" lead: crossattn binds each object to a place only if each object's key says which
object it is. On held-out shapes graphs (without boxes) this prints, for the encoder's per-object tokens (and, for
comparison, the class-embedding-free global vector): how well a nearest-centroid probe (centroids from one half of
the graphs, scored on the other) reads the object's colour, its shape and its whole class from its token, and
how similar two objects' tokens of one graph are (mean cosine; 1 = indistinguishable). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def probe(features, labels, split: int) -> float:
    """Nearest-centroid accuracy: centroids of the first `split` rows, scored on the rest."""
    import torch

    train_x, train_y, test_x, test_y = features[:split], labels[:split], features[split:], labels[split:]
    classes = sorted(set(train_y.tolist()))
    centroids = torch.stack([train_x[train_y == c].mean(0) for c in classes])
    nearest = torch.cdist(test_x, centroids).argmin(1)
    predicted = torch.tensor(classes)[nearest]
    return float((predicted == test_y).float().mean())


def measure(run_dir: str, clips: int = 400) -> dict:
    from pathlib import Path

    import torch

    from sg2video.data.shapes import ShapesDataset
    from sg2video.denoiser import encode_condition
    from sg2video.graphs import GraphBatch
    from sg2video.stages.encoder import load_pretrainer

    torch.set_num_threads(2)
    pretrainer, vocab, _ = load_pretrainer(Path(run_dir) / "checkpoints" / "encoder" / "last.pt")
    encoder = pretrainer.graph_encoder.eval()
    data = ShapesDataset("val", clips, size=32, frames=1)
    graphs = [data[i]["graphs"][0].without_boxes() for i in range(clips)]
    with torch.no_grad():
        cond = encode_condition(encoder, GraphBatch.pack(graphs), clips, 1)
    mask = cond.layout_mask[:, 0]
    tokens, classes = cond.obj_tokens[:, 0][mask], cond.obj_classes[:, 0][mask]
    names = [vocab.objects[int(c)].split(" ", 1) for c in classes]
    colours = torch.tensor([sorted({n[0] for n in names}).index(n[0]) for n in names])
    shapes = torch.tensor([sorted({n[1] for n in names}).index(n[1]) for n in names])
    split = len(tokens) // 2
    unit = torch.nn.functional.normalize(cond.obj_tokens[:, 0], dim=-1)
    sims = []
    for g in range(clips):
        k = int(mask[g].sum())
        if k >= 2:
            s = unit[g, :k] @ unit[g, :k].T
            sims.append(float(s[~torch.eye(k, dtype=torch.bool)].mean()))
    return {"objects": int(len(tokens)), "colour_from_token": probe(tokens, colours, split),
            "shape_from_token": probe(tokens, shapes, split), "class_from_token": probe(tokens, classes, split),
            "chance_class": 1 / len(set(classes.tolist())),
            "same_graph_token_cosine": sum(sims) / max(1, len(sims))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory with checkpoints/encoder/last.pt")
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.run_dir, args.clips)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
