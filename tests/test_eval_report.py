"""`movenet eval`'s report on hand-made data sets and runs (no model): counts of images, people and
left-out images, gallery names, the report folder's mode and replacement, and early refusals."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest

import movenet.evaluate
from movenet.datasets import ImageEntry, KeypointDataset, PersonAnnotation
from movenet.errors import DataWarning, MoveNetError
from movenet.evaluate import (EvalRun, _replace_dir, _worst_files, check_out_dir, load_data, make_samples,
                              report_dict, write_report)


def person(pid, bbox, crowd=False):
    kp = np.zeros((17, 3))
    kp[5] = (20, 20, 2)
    kp[11] = (20, 50, 2)
    return PersonAnnotation(pid, 1, kp, bbox, bbox[2] * bbox[3], crowd)


def dataset(*images) -> KeypointDataset:
    return KeypointDataset("t", [ImageEntry(i + 1, Path(f"{i}.png"), 100, 60, people)
                                 for i, people in enumerate(images)], {})


def topdown_report(ds) -> dict:
    samples, excluded = make_samples(ds, "topdown")
    run = EvalRun(ds, "topdown", samples, excluded, [], np.ones(len(samples)), [], {})
    return report_dict(run, "data.json")


def test_topdown_counts_images_people_and_images_with_no_box():
    ds = dataset([person(1, (10, 10, 20, 40)), person(2, (50, 10, 20, 40))],  # two people
                 [person(3, (10, 10, 0, 0))],  # labelled, no box: nothing to crop
                 [person(4, (10, 10, 20, 40))])
    report = topdown_report(ds)
    assert (report["images"], report["people"], report["excluded_images"]) == (2, 3, 1)


def test_crowds_are_not_people_to_score():
    ds = dataset([person(1, (10, 10, 20, 40), crowd=True)], [person(2, (10, 10, 20, 40))])
    samples, excluded = make_samples(ds, "topdown")
    assert [s.person.id for s in samples] == [2] and excluded == 1


def test_topdown_warns_about_labelled_people_without_a_box(monkeypatch):
    ds = dataset([person(1, (10, 10, 0, 0)), person(2, (10, 10, 20, 40))])

    class Stop(Exception):
        pass

    def stop(specs):
        raise Stop

    monkeypatch.setattr(movenet.evaluate, "model_labels", stop)  # (what follows needs models)
    with pytest.warns(DataWarning, match="t: 1 labelled people have no box"), pytest.raises(Stop):
        movenet.evaluate.evaluate(ds, ["m.pt"], "topdown", progress=False)


def test_gallery_names_of_labels_that_make_the_same_file_name_differ():
    files = _worst_files(["lightning@224", "lightning_224", "lightning@224'"])
    assert len(set(files.values())) == 3
    assert files["lightning@224"] == "worst_lightning_224.png"


def test_replacing_a_report_leaves_no_old_copy(tmp_path):
    out, new = tmp_path / "report", tmp_path / "new"
    out.mkdir()
    (out / "report.json").write_text("old")
    new.mkdir()
    (new / "report.json").write_text("new")
    _replace_dir(new, out)
    assert (out / "report.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_the_report_folder_gets_the_usual_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(movenet.evaluate, "_write_report_files",
                        lambda run, data, folder: (folder / "report.json").write_text("{}"))
    before = os.umask(0o022)
    try:
        write_report(None, "data.json", tmp_path / "report")
        write_report(None, "data.json", tmp_path / "report")  # replacing it too
    finally:
        os.umask(before)
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_report_folder_holding_a_checkpoint_is_not_replaced(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(MoveNetError, match=r"holds files an eval report does not write \(best.pt\)"):
        check_out_dir(tmp_path)


def eval_args(tmp_path, **values) -> argparse.Namespace:
    args = dict(out=str(tmp_path / "report"), limit=None, px_size=None, px=5.0, models=["m.pt"], data="d.json",
                images=None, split=None, protocol="whole", threads=None, refine=False, flip=False)
    return argparse.Namespace(**{**args, **values})


@pytest.mark.parametrize("option, field, value", [("--limit", "limit", 0), ("--px-size", "px_size", 0),
                                                  ("--px", "px", 0.0), ("--px", "px", float("nan")),
                                                  ("--px", "px", float("inf"))])
def test_eval_refuses_bad_numbers_from_the_api_too(tmp_path, monkeypatch, option, field, value):
    def no_data(args, specs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(movenet.evaluate, "load_data_for", no_data)
    with pytest.raises(MoveNetError, match=f"{option} must be a finite number > 0, got {value}"):
        movenet.evaluate.cmd_eval(eval_args(tmp_path, **{field: value}))


def test_images_do_not_apply_to_a_training_config(tmp_path):
    with pytest.raises(MoveNetError, match="--images does not apply to a training config"):
        load_data(tmp_path / "cfg.yaml", image_root=tmp_path / "images")


def test_the_documented_example_report_has_every_key_a_report_has():
    """docs/eval-example/report.json is what the docs show users: it must not lag behind the
    report's format (its top-level keys are those of any report)."""
    import json

    example = json.loads((Path(__file__).resolve().parents[1] / "docs" / "eval-example" / "report.json").read_text())
    report = topdown_report(dataset([person(1, (10, 10, 20, 40))]))
    assert list(example) == list(report)
