"""Metrics: PCK on constructed cases, OKS and COCO AP against pycocotools on coco-mini."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from movenet.errors import MoveNetError
from movenet.metrics import (coco_keypoint_ap, fixed_px_thresholds, head_size, oks, pck, pck_curve,
                             torso_size)
from movenet.schema import COCO17

pytest.importorskip("pycocotools")


def _gt(points, vis) -> np.ndarray:
    g = np.zeros((len(points), 3))
    g[:, :2] = points
    g[:, 2] = vis
    return g


def test_pck_counts_only_labelled_keypoints_and_uses_inclusive_threshold():
    gt = np.stack([_gt([[0, 0], [10, 0], [20, 0]], [2, 1, 0]),
                   _gt([[0, 0], [10, 0], [20, 0]], [2, 2, 2])])
    pred = gt[..., :2].copy()
    pred[0, 0] += [3, 4]    # distance 5 == threshold: correct
    pred[0, 1] += [6, 0]    # 6 > 5: wrong (occluded but labelled: counts)
    pred[0, 2] += [100, 0]  # unlabelled: ignored however far
    pred[1, 1] += [0, 5.01]
    per_kpt, overall = pck(pred, gt, np.array([5.0, 5.0]))
    np.testing.assert_allclose(per_kpt, [1.0, 0.0, 1.0])
    assert overall == pytest.approx(3 / 5)


def test_pck_nan_where_no_ground_truth_and_sample_without_threshold_dropped():
    gt = np.stack([_gt([[0, 0], [1, 1]], [2, 0]), _gt([[0, 0], [1, 1]], [2, 0])])
    pred = gt[..., :2] + [[[50, 0], [0, 0]], [[0, 0], [0, 0]]]
    per_kpt, overall = pck(pred, gt, np.array([np.nan, 2.0]))  # first sample has no normaliser
    assert per_kpt[0] == 1.0 and np.isnan(per_kpt[1])
    assert overall == 1.0
    _, none = pck(pred, gt * [1, 1, 0], np.array([2.0, 2.0]))
    assert np.isnan(none)


def test_pck_accepts_scores_column_and_curve_is_monotonic():
    rng = np.random.default_rng(0)
    gt = _gt(rng.uniform(0, 100, (17, 2)), 2)[None].repeat(4, axis=0)
    pred = np.concatenate([gt[..., :2] + rng.normal(0, 5, gt[..., :2].shape), np.ones((4, 17, 1))], axis=-1)
    norm = np.full(4, 50.0)
    curve = pck_curve(pred, gt, norm, np.linspace(0, 1, 11))
    assert curve[0] == 0.0 and np.all(np.diff(curve) >= 0)
    assert pck(pred, gt, 0.2 * norm)[1] == pytest.approx(curve[2])


def test_torso_size_left_shoulder_to_right_hip():
    gt = np.zeros((2, 17, 3))
    gt[:, 5] = [10, 10, 2]
    gt[:, 12] = [13, 14, 1]
    gt[1, 12, 2] = 0
    size = torso_size(gt, COCO17)
    assert size[0] == pytest.approx(5.0) and np.isnan(size[1])


def test_head_size_from_head_box_or_head_segment_else_unavailable():
    sizes = head_size([{"head_box": [0, 0, 30, 40]}, {"neck": [0, 0], "head_top": [3, 4]}, {}])
    np.testing.assert_allclose(sizes[:2], [0.6 * 50, 5.0])
    assert np.isnan(sizes[2])


def test_fixed_px_threshold_scales_with_crop_side():
    np.testing.assert_allclose(fixed_px_thresholds(np.array([192, 384, 96]), 5, 192), [5, 10, 2.5])


def _load_coco(coco_mini):
    from movenet.datasets import load_keypoint_dataset
    return load_keypoint_dataset(coco_mini)


def _people(ds):
    return [p for e in ds.images for p in e.people if not p.iscrowd and p.num_labelled > 0]


def _result(person, xy, score=1.0) -> dict:
    kpts = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    return {"image_id": person.image_id, "keypoints": kpts.reshape(-1).tolist(), "score": score}


def _pycocotools_ap(json_path, results) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(json_path))
        ev = COCOeval(gt, gt.loadRes([{**r, "category_id": 1} for r in results]), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_give_ap_1(coco_mini):
    ds = _load_coco(coco_mini)
    results = [_result(p, p.keypoints[:, :2]) for p in _people(ds)]
    ap = coco_keypoint_ap(ds.coco, results)
    assert ap["AP"] == pytest.approx(1.0) and ap["AR"] == pytest.approx(1.0)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)


def _hand_oks(d2: np.ndarray, labelled: np.ndarray, area: float) -> float:
    """OKS from the COCO formula: mean over labelled k of exp(-d_k^2 / (2 s^2 k_i^2)),
    s^2 = area, k_i = 2 sigma_i."""
    k = 2 * np.array(COCO17.sigmas) / 10
    return float(np.exp(-d2[labelled] / (2 * area * k[labelled] ** 2)).mean())


def _shift_for_oks(person, target: float) -> float:
    """Shift (pixels, along x) that gives ``target`` OKS by the hand formula (bisection)."""
    labelled = person.keypoints[:, 2] > 0
    lo, hi = 0.0, 1e4
    for _ in range(100):
        mid = (lo + hi) / 2
        if _hand_oks(np.full(17, mid ** 2), labelled, person.area) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_shifted_predictions_match_hand_computed_oks_and_pycocotools(coco_mini):
    ds = _load_coco(coco_mini)
    target = 0.72  # between the 0.70 and 0.75 OKS thresholds: AP = 5/10, AP50 = 1, AP75 = 0
    results, oks_ours, oks_hand = [], [], []
    for p in _people(ds):
        xy = p.keypoints[:, :2] + [_shift_for_oks(p, target), 0.0]
        results.append(_result(p, xy))
        oks_ours.append(oks(xy, p.keypoints, p.area))
        oks_hand.append(_hand_oks(((xy - p.keypoints[:, :2]) ** 2).sum(1), p.keypoints[:, 2] > 0, p.area))
    np.testing.assert_allclose(oks_ours, oks_hand, rtol=1e-9)
    np.testing.assert_allclose(oks_hand, target, atol=1e-6)
    ap = coco_keypoint_ap(ds.coco, results)
    assert ap["AP"] == pytest.approx(0.5) and ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == 0.0
    # our loader's dict evaluates exactly like pycocotools reading the raw file
    raw = _pycocotools_ap(coco_mini / "person_keypoints.json", results)
    np.testing.assert_allclose([ap[k] for k in ("AP", "AP50", "AP75", "AR")], raw[[0, 1, 2, 5]])


def test_noisy_predictions_equal_pycocotools_on_raw_file(coco_mini):
    ds = _load_coco(coco_mini)
    rng = np.random.default_rng(1)
    results = [_result(p, p.keypoints[:, :2] + rng.normal(0, 4, (17, 2)), float(rng.uniform()))
               for p in _people(ds)]
    ap = coco_keypoint_ap(ds.coco, results)
    raw = _pycocotools_ap(coco_mini / "person_keypoints.json", results)
    ours = np.array([ap[k] for k in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")])
    np.testing.assert_allclose(np.nan_to_num(ours, nan=-1.0), raw)
    assert 0.0 < ap["AP"] < 1.0


def test_oks_equals_pycocotools_compute_oks(coco_mini):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = _load_coco(coco_mini)
    rng = np.random.default_rng(2)
    people = _people(ds)[:10]
    preds = [p.keypoints[:, :2] + rng.normal(0, 6, (17, 2)) for p in people]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_mini / "person_keypoints.json"))
        ev = COCOeval(gt, gt.loadRes([{**_result(p, xy), "category_id": 1} for p, xy in zip(people, preds)]),
                      "keypoints")
        ev.evaluate()
    for p, xy in zip(people, preds):
        dts = ev._dts[p.image_id, 1]
        gts = [g for g in ev._gts[p.image_id, 1]]
        ious = ev.ious[p.image_id, 1]
        d = next(i for i, det in enumerate(sorted(dts, key=lambda x: -x["score"]))
                 if np.allclose(det["keypoints"][:2], xy[0]))
        g = next(j for j, a in enumerate(gts) if a["id"] == p.id)
        assert oks(xy, p.keypoints, p.area) == pytest.approx(ious[d, g], rel=1e-9)


def test_no_results_give_zero_ap(coco_mini):
    ap = coco_keypoint_ap(_load_coco(coco_mini).coco, [])
    assert ap["AP"] == 0.0 and ap["AR"] == 0.0


def test_ground_truth_without_info_evaluates_on_pycocotools_that_read_it(coco_mini, monkeypatch):
    """pycocotools 2.0.9 and 2.0.10 read ``dataset['info']`` in loadRes: a dict without one (LSP,
    our validation splits) must still evaluate there, and the caller's dict is left as it was."""
    from pycocotools.coco import COCO

    load_res = COCO.loadRes

    def strict_load_res(self, results):
        self.dataset["info"]  # KeyError as in those versions
        return load_res(self, results)

    monkeypatch.setattr(COCO, "loadRes", strict_load_res)
    ds = _load_coco(coco_mini)
    gt = {k: v for k, v in ds.coco.items() if k != "info"}
    results = [_result(p, p.keypoints[:, :2]) for p in _people(ds)]
    assert coco_keypoint_ap(gt, results)["AP"] == pytest.approx(1.0)
    assert "info" not in gt


def test_malformed_results_are_named(coco_mini):
    ds = _load_coco(coco_mini)
    good = _result(_people(ds)[0], _people(ds)[0].keypoints[:, :2])
    with pytest.raises(MoveNetError, match=r"result 1: 3 keypoint values, expected 51 \(x, y, score for each of 17"):
        coco_keypoint_ap(ds.coco, [good, {**good, "keypoints": [1.0, 2.0, 0.5]}])
    with pytest.raises(MoveNetError, match="result 0: image_id -5 is not an image of the ground truth"):
        coco_keypoint_ap(ds.coco, [{**good, "image_id": -5}])
    assert np.isnan(coco_keypoint_ap(ds.coco, [good], sigmas=np.zeros(0))["AP"])  # no sigmas: no OKS
    for bad, message in [({"image_id": [1]}, "result 0: needs image_id, keypoints and a score"),
                         ({"score": None}, "result 0: needs image_id, keypoints and a score")]:
        with pytest.raises(MoveNetError, match=message):
            coco_keypoint_ap(ds.coco, [{**good, **bad}])
    no_score = {key: v for key, v in good.items() if key != "score"}
    with pytest.raises(MoveNetError, match=r"result 0: needs image_id, keypoints and a score \(KeyError"):
        coco_keypoint_ap(ds.coco, [no_score])
    with pytest.raises(MoveNetError, match="the ground truth has 17 keypoints per person, the sigmas 12"):
        coco_keypoint_ap(ds.coco, [good], sigmas=np.ones(12))
    nested = {**good, "keypoints": np.reshape(good["keypoints"], (17, 3)).tolist()}  # rows of x, y, score
    assert coco_keypoint_ap(ds.coco, [nested]) == coco_keypoint_ap(ds.coco, [good])


def test_a_schemas_sigmas_are_in_cocos_units():
    """Sigmas given as the schema holds them (COCO's file values, x10) score as COCO's own."""
    rng = np.random.default_rng(0)
    images, annotations, results = [], [], []
    for i in range(1, 9):
        kpts = np.concatenate([rng.uniform(100, 300, (17, 2)), np.full((17, 1), 2.0)], axis=1)
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 400})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 200.0 * 200.0,
                            "bbox": [100, 100, 200, 200], "num_keypoints": 17, "keypoints": kpts.ravel().tolist()})
        shifted = kpts.copy()
        shifted[:, :2] += rng.normal(0, 4 + i, (17, 2))
        results.append({"image_id": i, "keypoints": shifted.ravel().tolist(), "score": 1.0 - i / 10})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}]}
    default = coco_keypoint_ap(gt, results)
    assert 0.0 < default["AP"] < 1.0
    same = coco_keypoint_ap(gt, results, sigmas=np.array(COCO17.sigmas))
    assert {k: v for k, v in same.items() if v == v} == {k: v for k, v in default.items() if v == v}  # (nan: none)
    assert coco_keypoint_ap(gt, results, sigmas=np.array(COCO17.sigmas) * 3)["AP"] > default["AP"]
