"""Generative layouts: box trajectories for scene graphs that give no boxes (stage `layout`).

`boxes` (box space and arithmetic), `condition` (a window of graphs encoded for the model), `model` (the
relation-aware transformer denoiser and the relation scorer it is trained with), `scorer` (judging layouts),
`sampler` (windows, candidates, filling graphs), `train` (the stage's loss).
"""

# Where a layout-conditioned model's boxes come from (`layout=` of run.py's group and of sample.py):
# sampled by the layout model where a graph gives none, the graph's own (`given`), or the encoder's box head.
LAYOUT_SOURCES = ("sampled", "given", "head")
