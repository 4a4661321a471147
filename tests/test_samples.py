"""Training samples on real data (coco-mini, LSP) and on bad data: contract shapes, targets
that decode back to the labels, crops that map back to the image, counted skips, clear errors."""
import json
import re
import warnings
import dataclasses
from dataclasses import fields

import cv2
import numpy as np
import pytest
import torch

from movenet import augment, decode, samples
from movenet.augment import AugmentConfig
from movenet.datasets import load_keypoint_dataset
from movenet.errors import DataWarning, MoveNetError
from movenet.samples import DataConfig, PoseSampleDataset
from movenet.schema import COCO17
from movenet.targets import TargetParams

S = 192
CONTRACT = {"image": (3, S, S), "heatmaps": (17, 48, 48), "heatmap_weight": (17, 1, 1),
            "center": (1, 48, 48), "center_weight": (1, 1, 1), "regression": (34, 48, 48),
            "regression_mask": (34, 48, 48), "offsets": (34, 48, 48), "offset_mask": (34, 48, 48),
            "keypoints": (17, 3), "has_labels": ()}


@pytest.fixture(scope="module")
def coco(coco_mini):
    return load_keypoint_dataset(coco_mini)


@pytest.fixture(scope="module")
def lsp(lsp_dir):
    return load_keypoint_dataset(lsp_dir)


def synthetic(tmp_path, people_per_image, size=(120, 160), corrupt=(), missing=()):
    """A COCO dict with one image file per entry of ``people_per_image`` (lists of [K,3])."""
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    ann = 1
    for i, people in enumerate(people_per_image, start=1):
        name = f"im{i}.jpg"
        if i in corrupt:
            (tmp_path / name).write_bytes(b"not a jpeg")
        elif i not in missing:
            cv2.imwrite(str(tmp_path / name), np.full((*size, 3), 90, np.uint8))
        coco["images"].append({"id": i, "file_name": name, "width": size[1], "height": size[0]})
        for kp in people:
            crowd = isinstance(kp, str)
            coco["annotations"].append({
                "id": ann, "image_id": i, "category_id": 1, "iscrowd": int(crowd),
                "keypoints": [0] * 51 if crowd else [float(v) for v in np.asarray(kp).ravel()],
                **({"bbox": [10, 10, 50, 50]} if crowd else {})})
            ann += 1
    return load_keypoint_dataset(coco, image_root=tmp_path)


def person(x0=40, y0=20, n=17, step=4.0):
    kp = np.zeros((17, 3))
    kp[:n, 0] = x0 + np.arange(n) * step
    kp[:n, 1] = y0 + np.arange(n) * step
    kp[:n, 2] = 2
    return kp


def test_contract_shapes_dtypes_and_default_collate(coco):
    ds = PoseSampleDataset(coco, DataConfig(), AugmentConfig(), train=True, verbose=False)
    x = ds[0]
    for key, shape in CONTRACT.items():
        assert tuple(x[key].shape) == shape, key
        assert x[key].dtype == (torch.bool if key == "has_labels" else torch.float32), key
    assert x["image"].max() > 1 and x["image"].max() <= 255  # RGB 0..255, not normalised
    assert set(x["meta"]) >= {"image_id", "ann_id", "box", "source"}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["heatmaps"].shape == (4, 17, 48, 48) and batch["meta"]["box"].shape == (4, 4)


def test_multi_worker_loading(coco):
    ds = PoseSampleDataset(coco, train=True, verbose=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(8)), batch_size=4,
                                         num_workers=2)
    batches = list(loader)
    assert sum(len(b["image"]) for b in batches) == 8


def test_validation_targets_decode_to_the_annotation_in_original_pixels(coco):
    ds = PoseSampleDataset(coco, train=False, verbose=False)
    by_ann = {p.id: p for e in coco.images for p in e.people}
    checked = 0
    for i in range(len(ds)):
        x = ds[i]
        cy, cx = x["center_cell"].tolist()
        out = decode.decode_at_center(x["heatmaps"].numpy(), x["regression"].numpy(),
                                      x["offsets"].numpy(), cy, cx)
        x0, y0, w, h = x["meta"]["box"].tolist()
        taught = x["keypoints"][:, 2].numpy() > 0
        truth = by_ann[int(x["meta"]["ann_id"])].keypoints
        back = np.stack([x0 + out[:, 0] * w, y0 + out[:, 1] * h], axis=1)  # contract's mapping
        np.testing.assert_allclose(back[taught], truth[taught, :2], atol=0.02)
        checked += taught.sum()
        # Without augmentation the crop holds the whole person: every label is taught.
        np.testing.assert_array_equal(taught, truth[:, 2] > 0)
    assert checked > 400


def test_augmented_samples_map_back_through_the_affine(coco):
    ds = PoseSampleDataset(coco, DataConfig(), AugmentConfig(rotation_prob=1.0, flip_prob=1.0),
                           train=True, verbose=False)
    by_ann = {p.id: p for e in coco.images for p in e.people}
    flip = coco.schema.flip_index()
    torch.manual_seed(0)
    for i in range(0, len(ds), 5):
        x = ds[i]
        kp = x["keypoints"].numpy()
        m = x["meta"]["affine"].numpy()
        back = kp[:, :2] @ m[:, :2].T + m[:, 2]
        truth = by_ann[int(x["meta"]["ann_id"])].keypoints[flip]  # flipped: labels swapped
        taught = kp[:, 2] > 0
        np.testing.assert_allclose(back[taught], truth[taught, :2], atol=0.05)
        assert bool(x["meta"]["flip"])


def test_training_samples_are_reproducible_from_the_torch_seed(coco):
    ds = PoseSampleDataset(coco, train=True, verbose=False)
    torch.manual_seed(3)
    a = ds[2]
    torch.manual_seed(3)
    b = ds[2]
    c = ds[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["heatmaps"], b["heatmaps"])
    assert not torch.equal(a["image"], c["image"])


def test_crowd_images_and_unlabelled_people_are_counted(coco):
    ds = PoseSampleDataset(coco, train=False, verbose=False)
    assert ds.skipped["images with crowd regions"] == 5
    assert ds.skipped["people without keypoints"] > 0
    assert "crowd" in ds.describe()
    keep_crowd = PoseSampleDataset(coco, DataConfig(skip_crowd=False), train=False, verbose=False)
    assert len(keep_crowd) > len(ds) and "images with crowd regions" not in keep_crowd.skipped
    few = PoseSampleDataset(coco, DataConfig(min_keypoints=10), train=False, verbose=False)
    assert len(few) < len(ds) and few.skipped["people with fewer than 10 keypoints"] > 0
    crowded = PoseSampleDataset(coco, DataConfig(max_people=1), train=False, verbose=False)
    assert crowded.skipped["images with more than 1 people"] > 0
    assert len(set(crowded.index.image_count.tolist())) == 1


def test_lsp_unlabelled_face_keypoints_are_never_background(lsp):
    ds = PoseSampleDataset(lsp, train=True, verbose=False)
    assert len(ds) == 1000
    x = ds[7]
    assert x["heatmap_weight"][:5].sum() == 0  # nose, eyes, ears: not annotated in LSP
    assert x["heatmap_weight"][5:].sum() > 0
    assert x["regression_mask"][:10].sum() == 0 and x["offset_mask"][:10].sum() == 0


def test_keypoints_outside_the_image_and_crop(tmp_path):
    kp = person()
    kp[9, :2] = (-120.0, 40.0)  # outside the image (and any crop), a limb cut off by the frame
    ds = PoseSampleDataset(synthetic(tmp_path, [[kp]]), DataConfig(crop_expand=1.0), train=False,
                           verbose=False)
    x = ds[0]
    assert x["keypoints"][9, 2] == 0  # not taught
    assert x["regression_mask"][18:20].sum() == 0 and x["offset_mask"][18:20].sum() == 0
    assert x["heatmaps"][9].max() == 0 and x["heatmap_weight"][9] == 1
    assert x["keypoints"][5, 2] == 2
    # The crop stays on the image: the stray keypoint does not widen it.
    assert x["meta"]["box"][0] >= 0


def test_person_entirely_outside_the_image_is_not_a_target(tmp_path):
    away = person(x0=200, y0=20)
    ds = PoseSampleDataset(synthetic(tmp_path, [[person(), away]]), train=False, verbose=False)
    assert len(ds) == 1 and ds.skipped["people outside their image"] == 1


def test_people_whose_keypoints_make_a_flat_box_are_targets(tmp_path):
    """No bbox, labelled keypoints in a line: a box of zero width or height, still a person in the
    image, taught at its keypoints. One labelled point says nothing of the person's size: not a
    target (on the image's edge or not)."""
    upright, flat, one, edge = np.zeros((4, 17, 3))
    upright[5], upright[11] = (100, 30, 2), (100, 90, 2)
    flat[5], flat[6] = (30, 40, 2), (70, 40, 2)
    one[0] = (60, 50, 2)
    edge[0] = (160, 40, 2)  # on the right edge of the 160-wide image
    ds = PoseSampleDataset(synthetic(tmp_path, [[upright], [flat], [one], [edge], [person(x0=200)]]), train=False,
                           verbose=False)
    assert len(ds) == 2 and ds.skipped["people outside their image"] == 1
    assert ds.skipped["people with no size to crop (labelled points at one spot, no box)"] == 2
    for i, (kp, labelled) in enumerate([(upright, [5, 11]), (flat, [5, 6])]):
        x = ds[i]
        m = x["meta"]["affine"].numpy()
        taught = x["keypoints"].numpy()
        assert np.flatnonzero(taught[:, 2]).tolist() == labelled
        np.testing.assert_allclose(taught[labelled, :2] @ m[:, :2].T + m[:, 2], kp[labelled, :2], atol=0.05)
        assert x["meta"]["box"][2] > 40  # the crop from the points' extent, not a few pixels
        for j in labelled:
            hm = x["heatmaps"][j].numpy()
            cell = np.unravel_index(hm.argmax(), hm.shape)
            assert hm.max() == pytest.approx(1.0)
            assert cell == tuple(np.floor(taught[j, 1::-1] * hm.shape[0] / ds.size).astype(int))


def test_one_file_under_two_image_ids_is_one_image(tmp_path):
    """A converter's entry per person: the people of one photo stay in each other's heatmaps
    (not taught as background), and the photo is one image for the split and for pycocotools."""
    import copy

    from movenet.errors import DataWarning

    a, b = person(x0=20, n=12, step=3), person(x0=34, y0=26, n=12, step=3)
    one_id = synthetic(tmp_path, [[a, b]])
    coco = copy.deepcopy(one_id.coco)
    coco["images"].append({**coco["images"][0], "id": 7, "file_name": "./im1.jpg"})
    coco["annotations"][1]["image_id"] = 7
    with pytest.warns(DataWarning, match=r"1 image entries name a file listed before \(first: im1.jpg, ids 1 and 7\); "
                                         r"each file is read as one image with the people of all its entries$"):
        data = load_keypoint_dataset(coco, image_root=tmp_path)
    other = copy.deepcopy(coco)
    other["images"][1]["width"] = 320
    with pytest.warns(DataWarning, match=r"; 1 of them give another size than the first entry \(ids 1 and 7: "
                                         r"160x120 and 320x120\), whose size is kept"):
        load_keypoint_dataset(other, image_root=tmp_path)
    assert [len(e.people) for e in data.images] == [2] and [im["id"] for im in data.coco["images"]] == [1]
    assert [ann["image_id"] for ann in data.coco["annotations"]] == [1, 1]
    ds, expected = (PoseSampleDataset(d, train=False, verbose=False) for d in (data, one_id))
    for i in range(2):
        x, y = ds[i], expected[i]
        assert int((x["center"] == 1).sum()) == 2  # both people, each sample
        for key in ("heatmaps", "center", "heatmap_weight", "regression", "offsets"):
            assert torch.equal(x[key], y[key]), key


def test_images_without_people_are_counted(tmp_path):
    data = synthetic(tmp_path, [[person()], [], [np.zeros((17, 3))]])
    ds = PoseSampleDataset(data, train=False, verbose=False)
    assert len(ds) == 1
    assert ds.skipped["images without a target person"] == 2
    assert ds.skipped["people without keypoints"] == 1


def test_missing_image_file_is_an_error_naming_it_or_a_counted_skip(tmp_path):
    data = synthetic(tmp_path, [[person()], [person()]], missing=(2,))
    with pytest.raises(MoveNetError, match=r"im2\.jpg: image file not found"):
        PoseSampleDataset(data, train=False, verbose=False)
    ds = PoseSampleDataset(data, DataConfig(on_bad_image="skip"), train=False, verbose=False)
    assert len(ds) == 1 and ds.skipped["images with a missing file"] == 1


def test_corrupt_image_is_an_error_naming_it_or_replaced(tmp_path):
    data = synthetic(tmp_path, [[person()], [person()]], corrupt=(1,))
    ds = PoseSampleDataset(data, train=False, verbose=False)
    with pytest.raises(MoveNetError, match=r"im1\.jpg: not a readable image"):
        ds[0]
    ds = PoseSampleDataset(data, DataConfig(on_bad_image="skip"), train=True, verbose=False)
    with pytest.warns(UserWarning, match="im1.jpg"):
        x = ds[0]
    assert x["meta"]["image_id"] == 2 and ds.bad_images == 1 and not x["meta"]["skipped"]
    # validation scores what it can read: a stand-in marked as skipped, not another person twice
    ds = PoseSampleDataset(data, DataConfig(on_bad_image="skip"), train=False, verbose=False)
    with pytest.warns(UserWarning, match="im1.jpg"):
        x = ds[0]
    assert x["meta"]["image_id"] == 1 and x["meta"]["skipped"] and x["image"].max() == 0


def test_an_image_whose_size_differs_from_its_annotation_is_warned_about_once(tmp_path):
    data = synthetic(tmp_path, [[person(), person(x0=60)], [person()]])
    cv2.imwrite(str(tmp_path / "im1.jpg"), np.full((60, 80, 3), 90, np.uint8))  # resized after labelling
    ds = PoseSampleDataset(data, train=False, verbose=False)
    with pytest.warns(DataWarning, match=r"im1\.jpg: the image is 80x60, its annotation says 160x120 \(resized"):
        ds[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[1], ds[2]  # the same image again, then an image of the right size: no more warnings


def test_split_is_by_image_deterministic_and_complete(coco):
    train, val = samples.split_image_ids(coco, 0.25, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(coco.images)
    assert len(val) == round(0.25 * len(coco.images))
    assert samples.split_image_ids(coco, 0.25, seed=0) == (train, val)
    assert samples.split_image_ids(coco, 0.25, seed=1)[1] != val


def test_train_images_keep_nested_training_subsets_and_the_same_validation(coco):
    all_train, val = samples.split_image_ids(coco, 0.25, seed=0)
    assert len(all_train) >= 3
    previous = set()
    for n in range(1, len(all_train) + 1):
        train, val_n = samples.split_image_ids(coco, 0.25, seed=0, train_images=n)
        assert val_n == val and len(train) == n and previous < set(train) <= set(all_train)
        previous = set(train)
    # More images than there are: all of them.
    assert samples.split_image_ids(coco, 0.25, seed=0, train_images=10**6) == (all_train, val)
    # A larger validation fraction only moves images out of training.
    train_40, val_40 = samples.split_image_ids(coco, 0.4, seed=0)
    assert set(val) <= set(val_40) and set(train_40) <= set(all_train)


def test_train_images_in_the_config_limit_each_source(coco_mini, lsp_dir):
    cfg = DataConfig(sources=[{"path": str(coco_mini)}, {"path": str(lsp_dir)}], val_fraction=0.1,
                     train_images=5)
    train_parts, val_parts = samples.split_sources(cfg)
    full_train, full_val = samples.split_sources(DataConfig(sources=cfg.sources, val_fraction=0.1))
    assert [len(p.images) for p in train_parts] == [5, 5]
    assert [[e.id for e in p.images] for p in val_parts] == [[e.id for e in p.images] for p in full_val]
    for part, full in zip(train_parts, full_train):
        assert {e.id for e in part.images} <= {e.id for e in full.images}
    with pytest.raises(ValueError, match="train_images"):
        DataConfig(train_images=-1)


def test_build_datasets_from_config_and_source_weights(coco_mini, lsp_dir):
    cfg = DataConfig(sources=[{"path": str(coco_mini), "weight": 1.0},
                              {"path": str(lsp_dir), "weight": 3.0}], val_fraction=0.1)
    train, val = samples.build_datasets(cfg, AugmentConfig(), verbose=False)
    train_images = {(int(s), int(i)) for s, i in zip(train.index.image_source, train.index.image_ids)}
    val_images = {(int(s), int(i)) for s, i in zip(val.index.image_source, val.index.image_ids)}
    assert train_images.isdisjoint(val_images) and val_images
    w = samples.sample_weights(train).numpy()
    source = train.index.image_source[train.index.image_of[train.index.targets]]
    assert w.shape == (len(train),) and w.dtype == np.float64
    assert w[source == 1].sum() / w[source == 0].sum() == pytest.approx(3.0)
    clustered = samples.sample_weights(train, AugmentConfig(pose_clusters=8)).numpy()
    assert clustered[source == 1].sum() / clustered[source == 0].sum() == pytest.approx(3.0)
    assert clustered[source == 1].std() > 0
    flat = samples.sample_weights(train, AugmentConfig(source_balance=False)).numpy()
    np.testing.assert_array_equal(flat, 1.0)
    sampler = torch.utils.data.WeightedRandomSampler(samples.sample_weights(train), 64)
    assert len(list(sampler)) == 64


def test_data_config_validation_and_round_trip():
    cfg = DataConfig(sources=["a.json", {"path": "b", "weight": 2}])
    assert cfg.sources[1] == {"path": "b", "image_root": None, "weight": 2.0}
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown data config"):
        DataConfig.from_dict({"inputsize": 192})
    with pytest.raises(ValueError, match="multiple of 32"):
        DataConfig(input_size=100)
    with pytest.raises(ValueError, match="on_bad_image"):
        DataConfig(on_bad_image="ignore")
    with pytest.raises(ValueError, match="kernel"):
        DataConfig(kernel="disk")


def test_data_config_carries_every_target_setting_with_the_same_default():
    # DataConfig repeats TargetParams' fields so configs stay flat; they must not drift apart.
    data_fields = {f.name: f.default for f in fields(DataConfig)}
    for f in fields(TargetParams):
        assert f.name in data_fields, f.name
        assert data_fields[f.name] == f.default, f.name
    assert DataConfig(sigma_factor=0.021, sigma_min=0.7).target_params() == TargetParams(
        sigma_factor=0.021, sigma_min=0.7
    )


def test_target_sizes_grow_with_zoom_in(coco):
    ds = PoseSampleDataset(coco, DataConfig(), AugmentConfig(scale_range=(0.5, 0.5), translate=0,
                                                             rotation_prob=0), train=True, verbose=False)
    before = samples.target_sizes(ds, augmented=False)
    after = samples.target_sizes(ds, augmented=True)
    np.testing.assert_allclose(after[:, 0], 2 * before[:, 0], rtol=1e-6)
    assert ds.train  # restored


def test_data_stats_cli(coco_mini, tmp_path, capsys):
    from movenet.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"data": {"sources": [{"path": str(coco_mini)}], "val_fraction": 0},
                                  "augment": {"scale_range": [0.6, 1.0]}, "optim": {"lr": 0.001}}))
    out = tmp_path / "stats"
    assert main(["data", "stats", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "side/input" in text and "p50" in text
    png = out / "target_sizes.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "stats", str(coco_mini), "--out", str(out)]) == 0
    listing = capsys.readouterr().out.split("labelled keypoints")[1].split("no aug")[0]
    shares = dict(re.findall(r"(\w+) (\d+)%", listing))
    assert list(shares) == list(COCO17.keypoints) and all(0 < int(v) <= 100 for v in shares.values())
    assert main(["data", "stats", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_data_without_a_target_person_is_one_line_for_stats_and_train(tmp_path, capsys):
    from movenet.cli import main

    cv2.imwrite(str(tmp_path / "im1.jpg"), np.full((120, 160, 3), 90, np.uint8))
    empty, people = tmp_path / "empty.json", tmp_path / "people.json"
    image = {"id": 1, "file_name": "im1.jpg", "width": 160, "height": 120}
    empty.write_text(json.dumps({"images": [image], "annotations": []}))
    ann = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "keypoints": person().ravel().tolist()}
    people.write_text(json.dumps({"images": [image], "annotations": [ann]}))
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"model": {"name": "mobilenetv2_050"}, "log": {"tensorboard": False},
                                  "data": {"sources": [{"path": str(empty)}], "val_fraction": 0}}))
    assert main(["data", "stats", str(empty), "--out", str(tmp_path / "stats")]) == 2
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert main(["train", str(config), f"data.sources=[{{path: {people}}}]", f"data.val_sources=[{{path: {empty}}}]",
                 "--out", str(tmp_path / "run")]) == 2
    # (the last run's validation image is a training image too: warned about once per process)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("movenet: error: ")]
    reason = "(empty: 0 target people in 0 images; skipped 1 image without a target person)"
    assert errors == [f"movenet: error: {empty}: no target person for training {reason}"] * 2 + [
        f"movenet: error: {empty}: no target person for validation {reason}"]
    assert not (tmp_path / "stats").exists() and not (tmp_path / "run").exists()


def test_index_of_many_people_is_compact(tmp_path):
    data = synthetic(tmp_path, [[person(), person(60, 30)] for _ in range(50)])
    ds = PoseSampleDataset(data, train=False, verbose=False)
    assert len(ds) == 100
    arrays = [v for v in vars(ds.index).values() if isinstance(v, np.ndarray)]
    assert all(a.dtype != object for a in arrays)  # no per-person Python objects to copy


def test_a_flip_swaps_the_left_and_right_labels_of_every_person_in_view(tmp_path):
    data = synthetic(tmp_path, [[person(), person(60, 30)]])
    flip = AugmentConfig(flip_prob=1.0, scale_range=(1.0, 1.0), translate=0.0, rotation_prob=0.0)
    ds = PoseSampleDataset(data, DataConfig(), flip, train=True, verbose=False)
    geom, m = ds.geometry(0)
    target, others = ds.people_in_input(0, m, flip=False)
    f_target, f_others = ds.people_in_input(0, augment.crop_matrix(dataclasses.replace(geom, flip=True), S), flip=True)
    index = COCO17.flip_index()
    for plain, flipped in ((target[None], f_target[None]), (others, f_others)):
        assert len(plain) == 1
        np.testing.assert_allclose(flipped[:, :, 0], S - plain[:, index, 0], atol=1e-9)  # mirrored, labels swapped
        np.testing.assert_allclose(flipped[:, :, 1], plain[:, index, 1], atol=1e-9)
    # and the sample's heatmaps show it: the other person's left wrist peak is where its right wrist was
    sample = ds[0]
    x, y = f_others[0, 9, :2] // 4
    assert sample["heatmaps"][9, int(y), int(x)] == 1.0


# ---------------------------------------------------------------- edges found by mutation testing (data)
def test_subsets_and_merged_sources_keep_each_person_on_its_image(coco_mini):
    from movenet.datasets import concat_datasets

    ds = load_keypoint_dataset(coco_mini)
    ids = [e.id for e in ds.images]
    sub = ds.subset(ids[:5])
    assert {a["image_id"] for a in sub.coco["annotations"]} <= set(ids[:5])
    assert len(sub.coco["annotations"]) == sub.num_people == sum(len(e.people) for e in ds.images[:5])
    both = concat_datasets([sub, ds.subset(ids[5:9])])
    image_ids = {im["id"] for im in both.coco["images"]}
    assert len(image_ids) == 9 and {a["image_id"] for a in both.coco["annotations"]} <= image_ids
    per_image = {e.id: len(e.people) for e in both.images}
    counted = {i: sum(a["image_id"] == i for a in both.coco["annotations"]) for i in per_image}
    assert counted == per_image


def test_keypoints_on_an_image_edge_stay_labelled(coco_mini):
    raw = json.loads((coco_mini / "person_keypoints.json").read_text())
    ann = next(a for a in raw["annotations"] if a.get("num_keypoints", 0) > 3)
    ann["keypoints"][0:3] = [0, 30, 2]  # on the left edge: a point, not the (0, 0) placeholder
    ann["keypoints"][3:6] = [40, 0, 1]  # on the top edge
    ds = load_keypoint_dataset(raw, image_root=coco_mini / "images")
    person = next(p for e in ds.images for p in e.people if p.id == ann["id"])
    assert person.keypoints[0].tolist() == [0, 30, 2] and person.keypoints[1].tolist() == [40, 0, 1]


def test_a_small_source_still_gets_a_validation_image_and_sources_keep_their_weights(tmp_path):
    from movenet.samples import split_image_ids
    from train_helpers import write_coco_folder

    write_coco_folder(tmp_path / "a", 3, 64)
    write_coco_folder(tmp_path / "b", 2, 64)
    a, b = load_keypoint_dataset(tmp_path / "a"), load_keypoint_dataset(tmp_path / "b")
    train, val = split_image_ids(a, 0.1)
    assert len(val) == 1 and len(train) == 2  # round(0.3) = 0, yet a validation split was asked for
    cfg = DataConfig(input_size=64, sources=[{"path": str(tmp_path / "a"), "weight": 1.0},
                                             {"path": str(tmp_path / "b"), "weight": 3.0}])
    data = PoseSampleDataset([a, b], cfg, train=False, verbose=False)
    assert data.source_weights == [1.0, 3.0]
    weights = samples.sample_weights(data, AugmentConfig(source_balance=True)).numpy()
    source = data.index.image_source[data.index.image_of[data.index.targets]]
    per_source = [weights[source == s].sum() for s in (0, 1)]
    assert per_source[1] / per_source[0] == pytest.approx(3.0)
    assert weights.mean() == pytest.approx(1.0)  # (an unlabelled image beside them weighs 1)


def test_more_pose_clusters_than_people_is_said(tmp_path):
    from train_helpers import write_coco_folder

    write_coco_folder(tmp_path / "six", 6, 96)
    cfg = DataConfig(sources=[str(tmp_path / "six")], val_fraction=0.0, input_size=96)
    train, _ = samples.build_datasets(cfg, AugmentConfig(), verbose=False)
    with pytest.warns(DataWarning, match=r"six: augment.pose_clusters 6 is not below its 6 training people: each pose "
                                         r"is a cluster of its own, so its poses are drawn evenly"):
        even = samples.sample_weights(train, AugmentConfig(pose_clusters=6)).numpy()
    np.testing.assert_allclose(even, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert samples.sample_weights(train, AugmentConfig(pose_clusters=2)).numpy().std() > 0
