"""Action Genome: a root in the exact release format (class files, pickles with their quirks, real mp4
files) -> prepare.py -> ActionGenomeDataset.

Every video frame carries its decord index as an 8-bit code of 16 px black/white blocks along the top
of the frame's centre square, plus coloured rectangles where the annotation says the person (green)
and the objects (red cup, blue sofa, yellow phone) are, so the tests can see which frame was read and
where each box landed after resizing.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sg2video.data.action_genome import ActionGenomeDataset, prepare_action_genome
from sg2video.data.clips import collate_clips
from sg2video.errors import ConfigError, UserError
from sg2video.video_io import write_mp4

REPO = Path(__file__).resolve().parents[1]
OBJECT_CLASSES = (
    "person bag bed blanket book box broom chair closetcabinet clothes cupglassbottle dish door doorknob doorway "
    "floor food groceries laptop light medicine mirror papernotebook phonecamera picture pillow refrigerator "
    "sandwich shelf shoe sofacouch table television towel vacuum window"
).split()
RELATION_CLASSES = (
    "lookingat notlookingat unsure above beneath infrontof behind onthesideof in carrying coveredby drinkingfrom "
    "eating haveitontheback holding leaningon lyingon notcontacting otherrelationship sittingon standingon touching "
    "twisting wearing wiping writingon"
).split()
PERSON, CUP, PHONE, SOFA = 0, 10, 23, 30  # positions in object_classes.txt
RELATIONS = {  # pickle spellings per object class, and the predicate ids they map to
    "cup/glass/bottle": (["looking_at"], ["in_front_of"], ["holding", "touching"]),
    "sofa/couch": (["not_looking_at"], ["beneath"], ["sitting_on"]),
    "phone/camera": (["unsure"], ["on_the_side_of"], ["not_contacting"]),
}
PRED_IDS = {CUP: {0, 5, 14, 21}, SOFA: {1, 4, 19}, PHONE: {2, 7, 17}}
COLOURS = {PERSON: (20, 200, 20), CUP: (220, 20, 20), SOFA: (20, 20, 220), PHONE: (230, 230, 20)}
CLASS_OF = {CUP: "cup/glass/bottle", SOFA: "sofa/couch", PHONE: "phone/camera"}
SIZE = 64
LANDSCAPE, PORTRAIT = (192, 128), (128, 192)  # (W, H)
# video -> (size, set, frame count on disk, {annotated frame number: visible object classes});
# frames listed with "noperson" have an empty person box array, with () no visible object.
VIDEOS = {
    "001YG.mp4": (LANDSCAPE, "train", 40, {3: (CUP,), 9: (CUP, SOFA), 15: "noperson", 21: (CUP, SOFA), 27: (), 33: (CUP, PHONE)}),
    "00HFP.mp4": (LANDSCAPE, "train", 0, {1: (CUP,), 2: (CUP,)}),  # two frames: too few for a clip
    "0A8CF.mp4": (LANDSCAPE, "test", 20, {2: (CUP,), 6: (CUP,), 10: (CUP,), 14: (CUP,), 18: (CUP,)}),
    "0ACZ8.mp4": (PORTRAIT, "train", 30, {4: (CUP,), 12: (CUP, SOFA), 20: (CUP, SOFA), 28: (CUP, PHONE)}),
    "0BZXX.mp4": (LANDSCAPE, "train", 20, {5: (CUP,), 10: (CUP,), 15: (CUP,)}),  # its mp4 is corrupt
}
PNG_FRAMES = {"0A8CF.mp4": (2, 6, 10, 14)}  # frames/0A8CF.mp4/NNNNNN.png exist for these (not for 18)
PNG_CODE_OFFSET = 100  # the PNGs carry code k + 100, so a test can tell them from the mp4's frame k


def square_origin(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2


def boxes_at(size: tuple[int, int], k: int) -> dict[int, tuple[float, float, float, float]]:
    """Pixel boxes (x0, y0, x1, y1) of everything drawn in frame index k (layout in centre-square units)."""
    ox, oy = square_origin(size)
    boxes = {
        PERSON: (8 + k % 8, 24, 40 + k % 8, 120),
        CUP: (50 + k, 24, 70 + k, 52),
        SOFA: (60, 70 + k % 10, 116, 110 + k % 10),
    }
    boxes = {c: (x0 + ox, y0 + oy, x1 + ox, y1 + oy) for c, (x0, y0, x1, y1) in boxes.items()}
    # the phone lies outside the centre square: lost by the crop, kept by padding
    boxes[PHONE] = (4, 40, 28, 70) if size == LANDSCAPE else (40, 4, 70, 28)
    return boxes


def draw_frame(size: tuple[int, int], k: int, visible, code: int) -> np.ndarray:
    w, h = size
    frame = np.full((h, w, 3), 128, dtype=np.uint8)
    ox, oy = square_origin(size)
    for bit in range(8):  # most significant bit first, 16 x 16 blocks
        value = 255 if (code >> (7 - bit)) & 1 else 0
        frame[oy : oy + 16, ox + 16 * bit : ox + 16 * bit + 16] = value
    boxes = boxes_at(size, k)
    for cls in (PERSON, *visible):
        x0, y0, x1, y1 = boxes[cls]
        frame[y0:y1, x0:x1] = COLOURS[cls]
    return frame


def visible_at(annotated: dict, k: int):
    vis = annotated.get(k + 1, (CUP,))
    return vis if isinstance(vis, tuple) else (CUP,)


def person_entry(size, k, empty=False, decoy=False) -> dict:
    x0, y0, x1, y1 = boxes_at(size, k)[PERSON]
    boxes = [[x0, y0, x1, y1]]
    scores = [0.97]
    if decoy:  # a lower-scoring detection elsewhere, listed first
        boxes, scores = [[100.0, 10.0, 180.0, 60.0]] + boxes, [0.35] + scores
    n = 0 if empty else len(boxes)
    return {
        "bbox": np.asarray(boxes[:n], dtype=np.float32).reshape(n, 4),
        "bbox_score": np.asarray(scores[:n], dtype=np.float32),
        "bbox_size": size,
        "bbox_mode": "xyxy",
        "keypoints": np.zeros((n, 17, 3), dtype=np.float32),
        "keypoints_logits": np.zeros((n, 17), dtype=np.float32),
    }


def object_entries(video: str, size, k: int, visible, split: str) -> list[dict]:
    entries = []
    for cls in (CUP, SOFA, PHONE):
        name = CLASS_OF[cls]
        shown = cls in visible
        x0, y0, x1, y1 = boxes_at(size, k)[cls]
        attention, spatial, contacting = RELATIONS[name]
        entries.append({
            "class": name,
            "bbox": (float(x0), float(y0), float(x1 - x0), float(y1 - y0)) if shown else None,
            "attention_relationship": attention if shown else None,
            "spatial_relationship": spatial if shown else None,
            "contacting_relationship": contacting if shown else None,
            "metadata": {"tag": f"{video}/{name.replace('/', '_')}/{k + 1:06d}", "set": split},
            "visible": shown,
        })
    return entries


def build_root(root: Path) -> None:
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "object_classes.txt").write_bytes("\n".join(OBJECT_CLASSES).encode())
    (ann / "relationship_classes.txt").write_bytes("\n".join(RELATION_CLASSES).encode())
    objects, persons, keys = {}, {}, []
    for video, (size, split, length, annotated) in VIDEOS.items():
        for n, vis in annotated.items():
            key = f"{video}/{n:06d}.png"
            keys.append(key)
            k = n - 1
            persons[key] = person_entry(size, k, empty=vis == "noperson", decoy=(video, n) == ("001YG.mp4", 9))
            objects[key] = object_entries(video, size, k, vis if isinstance(vis, tuple) else (CUP,), split)
    order = np.random.default_rng(7).permutation(len(keys))  # the release's key order is not frame order
    with (ann / "object_bbox_and_relationship.pkl").open("wb") as f:
        pickle.dump({keys[i]: objects[keys[i]] for i in order}, f)
    with (ann / "person_bbox.pkl").open("wb") as f:
        pickle.dump({keys[i]: persons[keys[i]] for i in order[::-1]}, f)
    (ann / "frame_list.txt").write_text("\n".join(sorted(keys)) + "\n")
    (root / "videos").mkdir()
    for video, (size, _split, length, annotated) in VIDEOS.items():
        if not length:
            continue
        frames = np.stack([draw_frame(size, k, visible_at(annotated, k), k) for k in range(length)])
        path = write_mp4(root / "videos" / video, frames, fps=10, crf=12)
        if video == "0BZXX.mp4":  # cut the file short: the moov atom at the end is lost
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    from PIL import Image

    for video, numbers in PNG_FRAMES.items():
        size, _, _, annotated = VIDEOS[video]
        (root / "frames" / video).mkdir(parents=True)
        for n in numbers:
            frame = draw_frame(size, n - 1, visible_at(annotated, n - 1), n - 1 + PNG_CODE_OFFSET)
            Image.fromarray(frame).save(root / "frames" / video / f"{n:06d}.png")


def run_prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "src" / "prepare.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def ag_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("action_genome")
    build_root(root)
    proc = run_prepare("data=action_genome", f"data.root={root}", "data.frames=3", "unpickle_ok=true")
    assert proc.returncode == 0, proc.stderr
    (root / "prepare_stdout.txt").write_text(proc.stdout)
    return root


# ----------------------------------------------------------------------------------------------
# how the test expects a frame to be fitted, worked out by hand for 192 x 128 / 128 x 192 -> 64:
# crop: scale 64/128 = 0.5 -> 96 x 64, a third of the excess (32 px) cut each side: shift -16;
# pad: scale 64/192 = 1/3 -> 64 x 43 (42.67 rounds to 43), centred: shift (64 - 43) // 2 = 10.
EXPECTED_FIT = {
    (LANDSCAPE, "crop"): (0.5, 0.5, -16, 0),
    (PORTRAIT, "crop"): (0.5, 0.5, 0, -16),
    (LANDSCAPE, "pad"): (64 / 192, 43 / 128, 0, 10),
    (PORTRAIT, "pad"): (43 / 128, 64 / 192, 10, 0),
}


def to_output(size, mode, x, y):
    sx, sy, dx, dy = EXPECTED_FIT[(size, mode)]
    return x * sx + dx, y * sy + dy


def decode_code(frame: torch.Tensor, size, mode) -> int:
    """Read the 8-bit block code from an output frame (3, S, S)."""
    ox, oy = square_origin(size)
    gray = frame.float().mean(0)
    value = 0
    for bit in range(8):
        x, y = to_output(size, mode, ox + 16 * bit + 8, oy + 8)
        value = value * 2 + int(gray[int(y), int(x)] > 128)
    return value


def colour_bbox(frame: torch.Tensor, rgb) -> tuple[float, float, float, float] | None:
    """Pixel bbox (x0, y0, x1, y1) of the pixels close to `rgb` in (3, S, S)."""
    diff = (frame.float() - torch.tensor(rgb, dtype=torch.float32)[:, None, None]).abs().amax(0)
    ys, xs = torch.nonzero(diff < 60, as_tuple=True)
    if len(xs) < 4:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1


# ----------------------------------------------------------------------------------------------


def test_class_files_are_byte_exact_release_layout(ag_root):
    data = (ag_root / "annotations" / "object_classes.txt").read_bytes()
    assert len(data.split(b"\n")) == 36 and not data.endswith(b"\n")
    assert len((ag_root / "annotations" / "relationship_classes.txt").read_bytes().split(b"\n")) == 26


def test_prepare_refuses_to_unpickle_without_consent(tmp_path):
    (tmp_path / "annotations").mkdir()
    proc = run_prepare("data=action_genome", f"data.root={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unpickle_ok=true" in lines[0] and "run code" in lines[0]
    assert not (tmp_path / "sg2video_index").exists()
    missing = run_prepare("data=action_genome", f"data.root={tmp_path / 'nope'}", "unpickle_ok=true")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "annotations/ and videos/" in missing.stderr


def test_prepare_counts_and_vocabulary(ag_root):
    # 6 + 2 + 5 + 4 + 3 = 20 annotated frames in 5 videos. Dropped: 001YG frame 15 (person box array
    # with N = 0), 001YG frame 27 (every object invisible), and 00HFP's 2 frames (fewer than 3).
    # Kept: 001YG 4 + 0A8CF 5 + 0ACZ8 4 + 0BZXX 3 = 16 frames in 4 videos.
    meta = json.loads((ag_root / "sg2video_index" / "action_genome_index.json").read_text())
    report = meta["report"]
    assert (report["frames"], report["videos"]) == (20, 5)
    assert (report["kept_frames"], report["kept_videos"]) == (16, 4)
    assert report["dropped_frames"] == {"no person box": 1, "nothing visible": 1}
    assert (report["short_videos"], report["short_video_frames"]) == (1, 2)
    assert report["unknown_names"] == {}
    out = (ag_root / "prepare_stdout.txt").read_text()
    assert "kept 16 frames in 4 videos" in out
    assert "dropped 1 frames: no person box" in out and "dropped 1 frames: nothing visible" in out
    assert "dropped 2 frames of 1 videos: too few frames for a clip" in out
    vocab = meta["vocab"]
    assert len(vocab["objects"]) == 36 and len(vocab["predicates"]) == 26
    assert vocab["objects"][CUP] == "cup/glass/bottle" and vocab["objects"][SOFA] == "sofa/couch"
    assert vocab["objects"][8] == "closet/cabinet" and vocab["objects"][1] == "bag"
    assert vocab["predicates"][:3] == ["looking_at", "not_looking_at", "unsure"]
    assert vocab["predicates"][13] == "have_it_on_the_back" and vocab["predicates"][8] == "in"
    # frames sorted by number within each video, whatever the pickle's key order
    assert [v["name"] for v in meta["videos"]] == ["001YG.mp4", "0A8CF.mp4", "0ACZ8.mp4", "0BZXX.mp4"]
    with np.load(ag_root / "sg2video_index" / "action_genome_index.npz", allow_pickle=False) as npz:
        assert npz["frame_number"].tolist() == [3, 9, 21, 33, 2, 6, 10, 14, 18, 4, 12, 20, 28, 5, 10, 15]


def test_missing_index_and_too_short_clips_are_user_errors(ag_root, tmp_path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(UserError, match="unpickle_ok=true"):  # the function refuses too, not only the CLI
        prepare_action_genome(ag_root, frames=3)
    with pytest.raises(UserError, match="run `python src/prepare.py data=action_genome"):
        ActionGenomeDataset(tmp_path, "train", frames=3)
    with pytest.raises(ConfigError, match="data.frames=2 is below the 3 frames"):
        ActionGenomeDataset(ag_root, "train", frames=2)
    with pytest.raises(ConfigError, match="does not exist"):
        ActionGenomeDataset(tmp_path / "missing", "train", frames=3)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_clips_read_the_annotated_frames_and_boxes_land_on_the_objects(ag_root, mode):
    dataset = ActionGenomeDataset(ag_root, "train", frames=3, size=SIZE, resize=mode)
    # train: 001YG [3, 9, 21], [9, 21, 33]; 0ACZ8 [4, 12, 20], [12, 20, 28]; 0BZXX [5, 10, 15]
    assert len(dataset) == 5
    assert [(dataset.videos[v]["name"], dataset.arrays["frame_number"][r]) for v, r in dataset.clips] == [
        ("001YG.mp4", 3), ("001YG.mp4", 9), ("0ACZ8.mp4", 4), ("0ACZ8.mp4", 12), ("0BZXX.mp4", 5)]
    for index in range(4):
        item = dataset[index]
        name, numbers = item["source"]["video"], item["source"]["frames"]
        size, _, _, annotated = VIDEOS[name]
        assert item["video"].shape == (3, 3, SIZE, SIZE) and item["video"].dtype == torch.uint8
        for t, n in enumerate(numbers):
            frame, graph = item["video"][t], item["graphs"][t]
            assert decode_code(frame, size, mode) == n - 1, f"{name} frame {n}: wrong frame decoded"
            vis = annotated[n]
            objs = graph.objs.tolist()
            shown = {c for c in vis if mode == "pad" or c != PHONE}  # the crop cuts the phone out
            for node, cls in enumerate(objs):
                box = graph.boxes[node]
                if cls != PERSON and cls not in shown:  # invisible here: node kept, zero box, no triples
                    assert box.tolist() == [0, 0, 0, 0]
                    assert not (graph.triples[:, 2] == node).any()
                    continue
                found = colour_bbox(frame, COLOURS[cls])
                assert found is not None, f"{name} frame {n}: no pixels of class {cls}"
                x0, y0, x1, y1 = boxes_at(size, n - 1)[cls]
                expected = (*to_output(size, mode, x0, y0), *to_output(size, mode, x1, y1))
                assert np.allclose((box * SIZE).tolist(), expected, atol=1e-3), (cls, box * SIZE, expected)
                assert np.allclose(found, expected, atol=1.5), (name, n, cls, found, expected)
                if cls != PERSON:
                    preds = {int(p) for s, p, o in graph.triples.tolist() if o == node}
                    assert preds == PRED_IDS[cls]
            assert (graph.triples[:, 0] == 0).all()
        # one object list per clip: the union of the classes shown in any of its frames
        union = sorted({c for n in numbers for c in annotated[n] if mode == "pad" or c != PHONE})
        for graph in item["graphs"]:
            assert graph.objs.tolist() == [PERSON] + union
        assert item["graphs"][0].boxes.min() >= 0 and item["graphs"][0].boxes.max() <= 1
    # 001YG frame 9: the person is the higher-scoring of two detections (the decoy, listed first, is not)
    x0, y0, x1, y1 = boxes_at(LANDSCAPE, 8)[PERSON]
    person = (*to_output(LANDSCAPE, mode, x0, y0), *to_output(LANDSCAPE, mode, x1, y1))
    assert np.allclose((dataset[0]["graphs"][1].boxes[0] * SIZE).tolist(), person, atol=1e-3)
    # clip 4 (0BZXX) is a truncated mp4: skipped, counted, and the next readable clip served instead
    assert dataset.skipped == 0
    item = dataset[4]
    assert dataset.skipped == 1 and item["source"]["video"] == "001YG.mp4"
    dataset[4]
    assert dataset.skipped == 1  # counted once per clip


def test_splits_png_frames_and_contract(ag_root):
    test = ActionGenomeDataset(ag_root, "test", frames=3, size=SIZE)
    val = ActionGenomeDataset(ag_root, "val", frames=3, size=SIZE)
    train = ActionGenomeDataset(ag_root, "train", frames=3, size=SIZE, stride=2)
    # test: only 0A8CF (5 frames -> 3 clips); val has no videos of its own and reads the test set
    assert [test[i]["source"]["frames"] for i in range(len(test))] == [[2, 6, 10], [6, 10, 14], [10, 14, 18]]
    assert val.clips == test.clips
    assert {train.videos[v]["name"] for v, _ in train.clips}.isdisjoint({test.videos[v]["name"] for v, _ in test.clips})
    # stride 2: 001YG and 0ACZ8 have 4 frames -> one clip each starting at their first frame, 0BZXX one
    assert len(train) == 3
    # frames/0A8CF.mp4/NNNNNN.png are read when all of a clip's PNGs exist (their code is k + 100)
    codes = [[decode_code(f, LANDSCAPE, "crop") for f in test[i]["video"]] for i in range(3)]
    assert codes == [[101, 105, 109], [105, 109, 113], [9, 13, 17]]  # no PNG for frame 18: the mp4 is read
    batch = collate_clips([test[0], test[1]])
    assert batch.video.shape == (2, 3, 3, SIZE, SIZE) and batch.video.min() >= -1 and batch.video.max() <= 1
    assert batch.graphs.num_graphs == 6 and bool(batch.graphs.has_box.all())
    assert batch.graphs.objs.tolist() == [PERSON, CUP] * 6


def test_build_dataset_branch(ag_root):
    from omegaconf import OmegaConf

    from sg2video.data import build_dataset

    cfg = OmegaConf.load(REPO / "conf" / "data" / "action_genome.yaml")
    cfg.root, cfg.frames, cfg.size = str(ag_root), 3, 32
    dataset = build_dataset(cfg, "test")
    assert isinstance(dataset, ActionGenomeDataset) and len(dataset) == 3
    assert dataset[0]["video"].shape == (3, 3, 32, 32)


def mixed_config(ag_root: Path, coco_root: Path):
    """Action Genome (3 frames, 32 px) with COCO-Stuff (the real fixture records, plain images) mixed in 1:1."""
    import shutil

    from omegaconf import OmegaConf
    from PIL import Image

    coco = REPO.parent / "shared" / "fixtures" / "coco"
    coco = coco if coco.is_dir() else Path("/work/shared/fixtures/coco")
    (coco_root / "annotations").mkdir()
    shutil.copy(coco / "stuff_examples.json", coco_root / "annotations" / "stuff_train2017.json")
    (coco_root / "images" / "train2017").mkdir(parents=True)
    for info in json.loads((coco / "stuff_examples.json").read_text())["images"]:
        Image.new("RGB", (info["width"], info["height"]), (90, 140, 60)).save(coco_root / "images" / "train2017" / info["file_name"])
    cfg = OmegaConf.load(REPO / "conf" / "data" / "action_genome.yaml")
    cfg.root, cfg.frames, cfg.size = str(ag_root), 3, 32
    cfg.image_mix = {"name": "coco_stuff", "root": str(coco_root), "ratio": 0.5}
    return cfg


def test_image_mix_co_training(ag_root, tmp_path):
    """data.image_mix: COCO-Stuff still clips (the real fixture records) mixed into the train clips."""
    from sg2video.data import build_dataset
    from sg2video.data.mixed import MixedDataset

    cfg = mixed_config(ag_root, tmp_path)
    mixed = build_dataset(cfg, "train")
    assert isinstance(mixed, MixedDataset)
    # 5 train clips; ratio 0.5 -> as many image items (cycling through COCO's 2 kept images)
    assert len(mixed) == 10 and mixed.num_images == 5
    # vocabulary: Action Genome's 36 + 26 names first; COCO's "above" is Action Genome's "above"
    assert mixed.vocab.objects[:36] == mixed.videos.vocab.objects and mixed.vocab.predicates[:26] == mixed.videos.vocab.predicates
    assert len(mixed.vocab.predicates) == 26 + 5 and mixed.vocab.predicates[3] == "above"
    item = mixed[5]
    assert item["source"]["still"] and item["source"]["image_id"] == 934
    assert item["video"].shape == (3, 3, 32, 32) and all(torch.equal(f, item["video"][0]) for f in item["video"])
    names = [mixed.vocab.objects[i] for i in item["graphs"][0].objs.tolist()]
    assert names == ["bush", "fence", "grass", "sand", "sky-other", "stone", "tree", "wall-concrete"]
    original = mixed.images[0]["graphs"][0]
    preds = [mixed.vocab.predicates[p] for p in item["graphs"][0].triples[:, 1].tolist()]
    assert preds == [mixed.images.vocab.predicates[p] for p in original.triples[:, 1].tolist()]
    batch = collate_clips([mixed[0], mixed[5]])  # a video clip and a still clip batch together
    assert batch.video.shape == (2, 3, 3, 32, 32) and batch.graphs.num_graphs == 6
    assert len(build_dataset(cfg, "test")) == 3  # only train is mixed


def test_image_items_train_with_temporal_attention_kept_apart(ag_root, tmp_path):
    """The diffusion stage marks a batch's still (image) items, and the UNet receives them as (B, T) frames."""
    from omegaconf import OmegaConf

    from sg2video.data import build_dataset
    from sg2video.encoder.pretrain import build_pretrainer
    from sg2video.denoiser import Denoiser
    from sg2video.sampling import build_diffusion
    from sg2video.stages.diffusion import DiffusionTask
    from sg2video.unet import build_unet

    mixed = build_dataset(mixed_config(ag_root, tmp_path), "train")
    enc_cfg = OmegaConf.load(REPO / "conf" / "encoder" / "gcn.yaml")
    enc_cfg.merge_with({"layers": 1, "dim": 16, "hidden": 16, "cond_dim": 16,
                        "video": {"embed_dim": 16, "depth": 1, "heads": 1}})
    encoder = build_pretrainer(enc_cfg, mixed.vocab, 32).graph_encoder.eval()
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / "unet.yaml")
    model_cfg.merge_with({"dim": 8, "dim_mults": [1, 2], "cond": "crossattn", "prefix_frames": 0,
                          "spatial_attn_levels": [1], "temporal_attn_levels": [0, 1], "attn_head_dim": 8})
    denoiser = Denoiser(build_unet(model_cfg, 3, 16), mixed.vocab.num_objects, 16)
    seen = []
    denoiser.unet.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("still")),
                                            with_kwargs=True)
    task = DiffusionTask(denoiser, encoder, None, build_diffusion(OmegaConf.load(REPO / "conf" / "diffusion" / "default.yaml")),
                         model_cfg)
    loss = task.loss(denoiser, collate_clips([mixed[0], mixed[5], mixed[1]]), 0)["loss"]
    assert torch.isfinite(loss)
    assert seen[-1].tolist() == [[False] * 3, [True] * 3, [False] * 3]
    task.loss(denoiser, collate_clips([mixed[0], mixed[1]]), 0)  # video-only batch: no mask at all
    assert seen[-1] is None
