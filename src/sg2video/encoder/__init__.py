"""Scene-graph encoder (sg2im triple GCN), video encoder (timm ViT) and their SGDiff-style pretraining."""
from sg2video.encoder.gcn import GraphTripleConv, GraphTripleConvNet
from sg2video.encoder.graph_encoder import GraphEncoder, GraphEncoding
from sg2video.encoder.pretrain import EncoderPretrainer, build_pretrainer, loss_weights
from sg2video.encoder.video_encoder import VideoEncoder, VideoEncoding

__all__ = [
    "EncoderPretrainer",
    "GraphEncoder",
    "GraphEncoding",
    "GraphTripleConv",
    "GraphTripleConvNet",
    "VideoEncoder",
    "VideoEncoding",
    "build_pretrainer",
    "loss_weights",
]
