"""Scene graphs: vocabulary, per-frame graphs and packed batches (the graph JSON format: sg2video.graph_json).

Tensor layouts, documented here once:
- `SceneGraph.objs`: (O,) long, object class ids of one frame's graph.
- `SceneGraph.triples`: (R, 3) long, rows `(subject, predicate, object)`; subject/object index `objs`
  (local to the graph), predicate is a predicate id.
- `SceneGraph.boxes`: (O, 4) float `(x0, y0, x1, y1)` in [0, 1], or None when the graph has no layout;
  `SceneGraph.box_mask`: (O,) bool, which rows of `boxes` are real (None: all of them). A graph JSON may give
  some objects a box and others `null`: those rows are zeros with `box_mask` False.
- `GraphBatch`: many graphs packed sg2im style, without padding: objects concatenated, triples with
  subject/object re-indexed into the concatenation, `obj_to_graph` / `triple_to_graph` give each row's
  graph. Boxes are (N_obj, 4) with `has_box` (N_obj,) saying which rows carry a real box.

The JSON format (shared/specs/graph_json.md) lives in `sg2video.graph_json` (`parse_graph`, `load_graph_json`,
`graphs_to_json`, ...), which builds on this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch



# ----------------------------------------------------------------------------------------------
# Vocabulary


@dataclass
class Vocab:
    """Object and predicate names <-> ids. Saved in every checkpoint (as a plain dict)."""

    objects: list[str]
    predicates: list[str]
    _obj_index: dict[str, int] = field(init=False, repr=False)
    _pred_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.objects = list(self.objects)
        self.predicates = list(self.predicates)
        self._obj_index = {name: i for i, name in enumerate(self.objects)}
        self._pred_index = {name: i for i, name in enumerate(self.predicates)}
        assert len(self._obj_index) == len(self.objects), "duplicate object names in vocabulary"
        assert len(self._pred_index) == len(self.predicates), "duplicate predicate names in vocabulary"

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def num_predicates(self) -> int:
        return len(self.predicates)

    def object_id(self, name: str) -> int | None:
        return self._obj_index.get(name)

    def predicate_id(self, name: str) -> int | None:
        return self._pred_index.get(name)

    def to_dict(self) -> dict[str, list[str]]:
        return {"objects": list(self.objects), "predicates": list(self.predicates)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[str]]) -> "Vocab":
        return cls(objects=list(data["objects"]), predicates=list(data["predicates"]))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.objects == other.objects
            and self.predicates == other.predicates
        )


# ----------------------------------------------------------------------------------------------
# One graph, and a packed batch of graphs


@dataclass
class SceneGraph:
    """One frame's scene graph (layouts in the module docstring)."""

    objs: torch.Tensor
    triples: torch.Tensor
    boxes: torch.Tensor | None = None
    box_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.objs = torch.as_tensor(self.objs, dtype=torch.long).reshape(-1)
        self.triples = torch.as_tensor(self.triples, dtype=torch.long).reshape(-1, 3)
        if self.boxes is not None:
            self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
            assert self.boxes.shape[0] == self.objs.shape[0], "one box per object"
        if self.box_mask is not None:
            assert self.boxes is not None, "a box mask needs boxes"
            self.box_mask = torch.as_tensor(self.box_mask, dtype=torch.bool).reshape(-1)
            assert self.box_mask.shape[0] == self.objs.shape[0], "one mask entry per object"
            if bool(self.box_mask.all()):
                self.box_mask = None
            elif not bool(self.box_mask.any()):
                self.boxes = self.box_mask = None

    @property
    def has_box(self) -> torch.Tensor:
        """(O,) bool: which objects have a real box."""
        if self.boxes is None:
            return torch.zeros(self.num_objects, dtype=torch.bool)
        if self.box_mask is None:
            return torch.ones(self.num_objects, dtype=torch.bool)
        return self.box_mask

    @property
    def all_boxes_given(self) -> bool:
        return self.boxes is not None and self.box_mask is None

    def without_boxes(self) -> "SceneGraph":
        """The same graph with no layout (what a person writes)."""
        return SceneGraph(self.objs, self.triples)

    def with_boxes(self, boxes: torch.Tensor) -> "SceneGraph":
        """The same graph with every object's box set to `boxes` (O, 4)."""
        return SceneGraph(self.objs, self.triples, boxes)

    @property
    def num_objects(self) -> int:
        return int(self.objs.shape[0])

    @property
    def num_triples(self) -> int:
        return int(self.triples.shape[0])

    def same_relations(self, other: "SceneGraph") -> bool:
        return torch.equal(self.objs, other.objs) and torch.equal(self.triples, other.triples)


@dataclass
class GraphBatch:
    """Many graphs packed without padding (sg2im style); see the module docstring."""

    objs: torch.Tensor  # (N_obj,) long
    triples: torch.Tensor  # (N_tri, 3) long, subject/object index into `objs`
    obj_to_graph: torch.Tensor  # (N_obj,) long
    triple_to_graph: torch.Tensor  # (N_tri,) long
    boxes: torch.Tensor  # (N_obj, 4) float, zeros where has_box is False
    has_box: torch.Tensor  # (N_obj,) bool
    num_graphs: int

    @classmethod
    def pack(cls, graphs: Sequence[SceneGraph]) -> "GraphBatch":
        objs, triples, obj_to_graph, triple_to_graph, boxes, has_box = [], [], [], [], [], []
        offset = 0
        for g_index, graph in enumerate(graphs):
            num_obj = graph.num_objects
            objs.append(graph.objs)
            shifted = graph.triples.clone()
            shifted[:, 0] += offset
            shifted[:, 2] += offset
            triples.append(shifted)
            obj_to_graph.append(torch.full((num_obj,), g_index, dtype=torch.long))
            triple_to_graph.append(torch.full((graph.num_triples,), g_index, dtype=torch.long))
            boxes.append(graph.boxes if graph.boxes is not None else torch.zeros(num_obj, 4))
            has_box.append(graph.has_box)
            offset += num_obj

        def cat(parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
            return torch.cat(parts) if parts else empty

        return cls(
            objs=cat(objs, torch.zeros(0, dtype=torch.long)),
            triples=cat(triples, torch.zeros(0, 3, dtype=torch.long)),
            obj_to_graph=cat(obj_to_graph, torch.zeros(0, dtype=torch.long)),
            triple_to_graph=cat(triple_to_graph, torch.zeros(0, dtype=torch.long)),
            boxes=cat(boxes, torch.zeros(0, 4)),
            has_box=cat(has_box, torch.zeros(0, dtype=torch.bool)),
            num_graphs=len(graphs),
        )

    def to(self, device: torch.device | str) -> "GraphBatch":
        return GraphBatch(
            objs=self.objs.to(device),
            triples=self.triples.to(device),
            obj_to_graph=self.obj_to_graph.to(device),
            triple_to_graph=self.triple_to_graph.to(device),
            boxes=self.boxes.to(device),
            has_box=self.has_box.to(device),
            num_graphs=self.num_graphs,
        )

    @property
    def device(self) -> torch.device:
        return self.objs.device

    def objects_per_graph(self) -> torch.Tensor:
        return torch.bincount(self.obj_to_graph, minlength=self.num_graphs)

    def triples_per_graph(self) -> torch.Tensor:
        return torch.bincount(self.triple_to_graph, minlength=self.num_graphs)

    def unpack(self) -> list[SceneGraph]:
        """The graphs again (inverse of `pack`)."""
        graphs = []
        obj_counts = self.objects_per_graph().tolist()
        tri_counts = self.triples_per_graph().tolist()
        obj_start = tri_start = 0
        for num_obj, num_tri in zip(obj_counts, tri_counts):
            triples = self.triples[tri_start : tri_start + num_tri].clone()
            triples[:, 0] -= obj_start
            triples[:, 2] -= obj_start
            mask = self.has_box[obj_start : obj_start + num_obj]
            boxes = self.boxes[obj_start : obj_start + num_obj] if num_obj and bool(mask.any()) else None
            graphs.append(SceneGraph(self.objs[obj_start : obj_start + num_obj], triples, boxes,
                                     mask if boxes is not None else None))
            obj_start += num_obj
            tri_start += num_tri
        return graphs


GraphKey = tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]


def canonical_key(graph: SceneGraph) -> GraphKey:
    """A hashable key equal for two graphs exactly when they have the same multiset of object classes and the
    same multiset of (subject class, predicate, object class) triples: object order, triple order and boxes
    do not matter. (Two objects of one class are interchangeable here: the key does not tell which instance a
    triple names.)"""
    objs = graph.objs.tolist()
    triples = tuple(sorted((objs[s], p, objs[o]) for s, p, o in graph.triples.tolist()))
    return tuple(sorted(objs)), triples


def clip_key(graphs: Sequence[SceneGraph]) -> tuple[GraphKey, ...]:
    """A clip's key: the canonical keys of its per-frame graphs, in frame order."""
    return tuple(canonical_key(g) for g in graphs)


def relation_segments(graphs: Sequence[SceneGraph]) -> list[tuple[int, int]]:
    """[start, end) frame ranges of a per-frame graph list over which objects and relations stay the same."""
    bounds = [0] + [t for t in range(1, len(graphs)) if not graphs[t].same_relations(graphs[t - 1])] + [len(graphs)]
    return list(zip(bounds[:-1], bounds[1:]))


def iter_triples_named(vocab: Vocab, graph: SceneGraph) -> Iterable[tuple[str, str, str]]:
    """(subject name, predicate name, object name) for each triple; for messages and pictures."""
    for s, p, o in graph.triples.tolist():
        yield vocab.objects[int(graph.objs[s])], vocab.predicates[p], vocab.objects[int(graph.objs[o])]

