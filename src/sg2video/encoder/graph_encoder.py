"""Scene-graph encoder: packed graphs -> local tokens, a global vector, object vectors and a layout.

Inside the encoder every graph gets one extra *image node* (its own learned object embedding, not a
vocabulary class) and an *in image* edge (its own learned predicate embedding) from each of its objects
to that node, as in sg2im / SGDiff, so an object in no relation still receives context from the rest of
its graph. The image nodes and in-image edges never appear in the outputs except through the means of
`global_vec`.

`GraphEncoding` layouts (G graphs, N objects, C `cond_dim`, D `dim`):
- `tokens` (G, L, C) and `token_mask` (G, L) bool, True = real token. Graph g's tokens are, in order,
  one per triple (its `[s, p, o]` vectors concatenated and projected; triples in packing order) and then
  one per object (its vector projected; objects in packing order), followed by padding. So a graph with
  no triples still has a token per object. L is the largest count in the batch, capped at `max_tokens`
  (beyond the cap a graph's last tokens, i.e. objects first, are dropped; the cap is the only truncation).
- `global_vec` (G, C): projection of [mean node vector, mean edge vector] of the graph, the means taken
  over its objects and image node and over its triples and in-image edges (never empty).
- `obj_vecs` (N, D): the final object vectors; `box_pred` (N, 4): sigmoid (x0, y0, x1, y1) from the box
  head (the sg2im layout baseline).
Everything is computed per row or by scatter over the packing, so permuting the graphs of a batch
permutes the outputs the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sg2video.encoder.gcn import POOLINGS, GraphTripleConvNet
from sg2video.errors import ConfigError
from sg2video.graphs import GraphBatch


@dataclass
class GraphEncoding:
    tokens: torch.Tensor  # (G, L, cond_dim): per-triple tokens, then per-object tokens, then padding
    token_mask: torch.Tensor  # (G, L) bool, True = real token
    global_vec: torch.Tensor  # (G, cond_dim)
    obj_vecs: torch.Tensor  # (N_obj, dim)
    box_pred: torch.Tensor  # (N_obj, 4) in [0, 1], (x0, y0, x1, y1)


def rank_in_group(group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Each row's position among the rows of its group, in row order: (n,) long -> (n,) long."""
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(group, stable=True)
    ranks = torch.empty_like(group)
    ranks[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    return ranks


def segment_mean(values: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of the rows of `values` (n, D) per group -> (num_groups, D); zeros for an empty group."""
    total = values.new_zeros(num_groups, values.shape[1]).index_add(0, group, values)
    counts = torch.bincount(group, minlength=num_groups).clamp(min=1)
    return total / counts.unsqueeze(1).to(values.dtype)


class GraphEncoder(nn.Module):
    """Learned embeddings + sg2im triple GCN (or, with `use_gcn=False`, the embeddings alone: `onehot`).

    `residual` adds each GCN layer's output to its input (see sg2video.encoder.gcn for why it is on).
    """

    def __init__(
        self,
        num_objects: int,
        num_predicates: int,
        dim: int = 128,
        cond_dim: int = 256,
        layers: int = 5,
        hidden: int = 256,
        pooling: str = "avg",
        use_gcn: bool = True,
        max_tokens: int = 64,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"encoder.pooling={pooling!r} is not a pooling (accepted: {', '.join(POOLINGS)})")
        if max_tokens < 1:
            raise ConfigError(f"encoder.max_tokens={max_tokens} must be at least 1")
        self.num_objects, self.num_predicates = num_objects, num_predicates
        self.dim, self.cond_dim, self.max_tokens = dim, cond_dim, max_tokens
        # the extra last rows are the image node and the in-image predicate
        self.obj_embed = nn.Embedding(num_objects + 1, dim)
        self.pred_embed = nn.Embedding(num_predicates + 1, dim)
        self.gcn = GraphTripleConvNet(dim, hidden, layers, pooling, residual) if use_gcn and layers > 0 else None
        self.triple_proj = nn.Linear(3 * dim, cond_dim)
        self.object_proj = nn.Linear(dim, cond_dim)
        self.global_proj = nn.Linear(2 * dim, cond_dim)
        self.box_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, graphs: GraphBatch) -> GraphEncoding:
        objs, triples, num_graphs = graphs.objs, graphs.triples, graphs.num_graphs
        num_objs, num_triples = objs.shape[0], triples.shape[0]
        device = objs.device
        graph_ids = torch.arange(num_graphs, device=device)

        # nodes: real objects, then one image node per graph; edges: triples, then in-image edges
        node_classes = torch.cat([objs, torch.full((num_graphs,), self.num_objects, device=device)])
        node_to_graph = torch.cat([graphs.obj_to_graph, graph_ids])
        in_image = torch.stack([torch.arange(num_objs, device=device), num_objs + graphs.obj_to_graph], 1)
        edges = torch.cat([triples[:, [0, 2]], in_image])  # (R + N, 2) subject, object node
        edge_classes = torch.cat([triples[:, 1], torch.full((num_objs,), self.num_predicates, device=device)])
        edge_to_graph = torch.cat([graphs.triple_to_graph, graphs.obj_to_graph])

        node_vecs = self.obj_embed(node_classes)
        edge_vecs = self.pred_embed(edge_classes)
        if self.gcn is not None:
            node_vecs, edge_vecs = self.gcn(node_vecs, edge_vecs, edges)

        global_in = torch.cat(
            [segment_mean(node_vecs, node_to_graph, num_graphs), segment_mean(edge_vecs, edge_to_graph, num_graphs)],
            dim=1,
        )
        obj_vecs, pred_vecs = node_vecs[:num_objs], edge_vecs[:num_triples]
        # index_select, not obj_vecs[...]: advanced indexing's backward adds in a thread-dependent order on CPU
        subj_vecs, obj_vecs_ = obj_vecs.index_select(0, triples[:, 0]), obj_vecs.index_select(0, triples[:, 2])
        triple_tokens = self.triple_proj(torch.cat([subj_vecs, pred_vecs, obj_vecs_], 1))
        object_tokens = self.object_proj(obj_vecs)
        tokens, token_mask = self._pad_tokens(graphs, triple_tokens, object_tokens)
        return GraphEncoding(
            tokens=tokens,
            token_mask=token_mask,
            global_vec=self.global_proj(global_in),
            obj_vecs=obj_vecs,
            box_pred=torch.sigmoid(self.box_head(obj_vecs)),
        )

    def _pad_tokens(
        self, graphs: GraphBatch, triple_tokens: torch.Tensor, object_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scatter the packed tokens into (G, L, C) with their mask (order in the module docstring)."""
        num_graphs = graphs.num_graphs
        tri_counts = graphs.triples_per_graph()
        counts = tri_counts + graphs.objects_per_graph()
        length = max(1, min(self.max_tokens, int(counts.max()) if num_graphs else 1))
        graph_of = torch.cat([graphs.triple_to_graph, graphs.obj_to_graph])
        position = torch.cat(
            [
                rank_in_group(graphs.triple_to_graph, num_graphs),
                tri_counts[graphs.obj_to_graph] + rank_in_group(graphs.obj_to_graph, num_graphs),
            ]
        )
        values = torch.cat([triple_tokens, object_tokens])
        keep = position < length
        graph_of, position, values = graph_of[keep], position[keep], values[keep]
        tokens = values.new_zeros(num_graphs, length, values.shape[1]).index_put((graph_of, position), values)
        token_mask = torch.zeros(num_graphs, length, dtype=torch.bool, device=values.device)
        token_mask[graph_of, position] = True
        return tokens, token_mask
