"""`movenet average`: the mean of checkpoints' weights, refused across architectures, written
atomically and usable wherever a checkpoint is."""
import pytest
import torch

from movenet.checkpoint import average_checkpoints, load_model, model_from_checkpoint, save_checkpoint
from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.model import create_model

SMALL = 64


def _model(seed: int, name: str = "mobilenetv2_050"):
    torch.manual_seed(seed)
    model = create_model(name, input_size=SMALL)
    with torch.no_grad():  # batch-norm statistics differ too, so buffers are averaged as well
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(seed + 1)
    return model


@pytest.fixture()
def three(tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"m{seed}.pt")
        save_checkpoint(paths[-1], _model(seed), extra={"config": {"seed": seed}, "train_state": {"x": 1}})
    return paths


def test_average_is_the_mean_of_every_float_tensor(three):
    states = [torch.load(p, weights_only=False)["state_dict"] for p in three]
    soup = average_checkpoints(three)
    for key, value in soup["state_dict"].items():
        if value.is_floating_point() and key != "distance_offset":
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
        else:  # counters, and the decoding offset, are the first file's
            assert torch.equal(value, states[0][key])
    assert soup["averaged_from"] == [{"checkpoint": str(p), "weight": 1 / 3} for p in three]
    assert "train_state" not in soup and soup["config"] == {"seed": 0}
    differing = [k for k, v in states[0].items() if v.is_floating_point() and not torch.equal(v, states[1][k])]
    assert len(differing) > 10
    assert all(not torch.equal(soup["state_dict"][k], states[0][k]) for k in differing)
    _, schema = model_from_checkpoint(soup)
    assert schema.num_keypoints == 17


def test_weighted_average_interpolates_and_names_resolve_to_official_files(three, monkeypatch):
    from movenet import weights

    states = [torch.load(p, weights_only=False)["state_dict"] for p in three[:2]]
    monkeypatch.setattr(weights, "official_checkpoint", lambda name, verbose=True: three[1])
    soup = average_checkpoints([three[0], "lightning"], weights=[3, 1])
    for key, value in soup["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * states[0][key] + 0.25 * states[1][key])
    assert soup["averaged_from"][1] == {"checkpoint": "lightning", "weight": 0.25}
    one = average_checkpoints([three[0], three[1]], weights=[1, 0])
    for key, value in one["state_dict"].items():
        assert torch.equal(value, states[0][key])
    with pytest.raises(MoveNetError, match="1 weights for 2 checkpoints"):
        average_checkpoints(three[:2], weights=[1])
    with pytest.raises(MoveNetError, match="weights must be >= 0"):
        average_checkpoints(three[:2], weights=[1.5, -0.5])
    with pytest.raises(MoveNetError, match="weights must be >= 0"):
        average_checkpoints(three[:2], weights=[0, 0])
    with pytest.raises(MoveNetError, match="weights must be >= 0"):
        average_checkpoints(three[:2], weights=[1, float("inf")])


def test_average_of_copies_is_the_same_model(tmp_path):
    model = _model(0).eval()
    for name in ("a.pt", "b.pt"):
        save_checkpoint(tmp_path / name, model)
    soup, _ = model_from_checkpoint(average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"]))
    x = torch.rand(1, 3, SMALL, SMALL) * 255
    with torch.no_grad():
        for a, b in zip(model(x), soup(x)):
            torch.testing.assert_close(a, b)


def test_average_refuses_other_architectures_and_bad_files(three, tmp_path):
    save_checkpoint(tmp_path / "other.pt", create_model("mobilenetv3_small", input_size=SMALL))
    with pytest.raises(MoveNetError, match=r"other.pt: another model than .*m0.pt \(backbone mobilenetv2 -> "
                                           r"mobilenetv3_small; width 0.5 -> 1.0\); only models of the same"):
        average_checkpoints([three[0], tmp_path / "other.pt"])
    with pytest.raises(MoveNetError, match="at least two"):
        average_checkpoints(three[:1])
    with pytest.raises(MoveNetError, match="absent.pt: file not found"):
        average_checkpoints([three[0], tmp_path / "absent.pt"])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(MoveNetError, match="junk.pt: not a readable checkpoint"):
        average_checkpoints([three[0], tmp_path / "junk.pt"])


def test_cli_writes_a_checkpoint_that_loads_or_exits_with_one_line(three, tmp_path, capsys):
    out = tmp_path / "soup" / "soup.pt"
    assert main(["average", *map(str, three), "--out", str(out)]) == 0
    assert f"0.333 x {three[2]}" in capsys.readouterr().out
    model, _ = load_model(out)
    expected = average_checkpoints(three)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    save_checkpoint(tmp_path / "other.pt", create_model("mobilenetv3_small", input_size=SMALL))
    bad = tmp_path / "bad.pt"
    assert main(["average", str(three[0]), str(tmp_path / "other.pt"), "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.pt: another model than" in err[0]
    assert not bad.exists() and not list(tmp_path.glob(".bad.pt.*"))


def test_a_model_at_another_input_size_averages_with_runs_at_that_size(three, tmp_path):
    # a run trained at 96 mixed back with the model it started from, run at 96 (what train's
    # final.pt does for lightning@224)
    run96 = _model(5)
    run96 = type(run96)(run96.config.__class__(**{**run96.config.to_dict(), "input_size": 96}))
    save_checkpoint(tmp_path / "run96.pt", run96)
    with pytest.raises(MoveNetError, match=r"another model than .*run96.pt \(input_size 96 -> \d+\)"):
        average_checkpoints([tmp_path / "run96.pt", three[0]])
    soup = average_checkpoints([tmp_path / "run96.pt", f"{three[0]}@96"], weights=[1, 1])
    assert soup["model_config"]["input_size"] == 96
    start, _ = load_model(f"{three[0]}@96")  # the learnt weights the file's, the grid's constants 96's
    saved = torch.load(three[0], weights_only=False)["state_dict"]
    for key, value in start.named_parameters():
        assert torch.equal(value, saved[key])
    trained, start = run96.state_dict(), start.state_dict()
    for key, value in soup["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (trained[key] + start[key]) / 2)
    assert soup["averaged_from"][1]["checkpoint"] == f"{three[0]}@96"
    model, _ = model_from_checkpoint(soup)
    assert model.config.input_size == 96
    with pytest.raises(MoveNetError, match="multiple of 32"):
        average_checkpoints([tmp_path / "run96.pt", f"{three[0]}@95"])


def test_the_decoding_offset_is_the_first_files_and_other_offsets_are_said(three):
    from movenet.errors import DataWarning

    ckpt = torch.load(three[1], weights_only=False)
    ckpt["state_dict"]["distance_offset"].fill_(20.0)  # as movenet calibrate chose
    torch.save(ckpt, three[1])
    with pytest.warns(DataWarning, match=r"other distance offsets \(1.8, 20, 1.8\); that of .*m0.pt \(1.8\), weighted "
                                         r"most, is kept: movenet calibrate chooses one for the average"):
        soup = average_checkpoints(three)
    assert float(soup["state_dict"]["distance_offset"]) == pytest.approx(1.8)  # the first of equals
    with pytest.warns(DataWarning, match=r"that of .*m1.pt \(20\), weighted most"):
        soup = average_checkpoints(three, weights=[0, 1, 0])
    assert float(soup["state_dict"]["distance_offset"]) == pytest.approx(20)


def test_models_of_some_of_the_keypoints_average_by_name(tmp_path):
    """A model of some of COCO's keypoints averages with a COCO-17 one (``lightning`` in the
    README's example) through the channels of those keypoints; other schema settings warn."""
    from movenet.errors import DataWarning
    from movenet.schema import COCO17, KeypointSchema, schema_from_config

    names = ["right_wrist", "left_wrist", "right_ankle", "left_ankle"]
    four = KeypointSchema("four", tuple(names), flip_pairs=((0, 1), (2, 3)), skeleton=())
    torch.manual_seed(0)
    small = create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=4)
    save_checkpoint(tmp_path / "four.pt", small, four)
    full = _model(1)
    save_checkpoint(tmp_path / "coco.pt", full, COCO17)
    with pytest.warns(DataWarning, match=r"coco.pt: its nose, left_eye, right_eye, \.\.\. are left out"):
        avg = average_checkpoints([tmp_path / "four.pt", tmp_path / "coco.pt"])  # (four.pt is no run of coco.pt)
    model, schema = model_from_checkpoint(avg, "avg")
    assert schema.keypoints == tuple(names) and model.config.num_keypoints == 4
    head = "heatmap.out.weight"
    ours, theirs = small.state_dict()[head], full.state_dict()[head]
    for i, name in enumerate(names):  # each keypoint's channel: the mean of its own two
        j = COCO17.keypoints.index(name)
        torch.testing.assert_close(avg["state_dict"][head][i], (ours[i] + theirs[j]) / 2)
    # the other way round: COCO's 17, of which the 4 are averaged and the others are coco.pt's own
    back = average_checkpoints([tmp_path / "coco.pt", tmp_path / "four.pt"])
    assert back["keypoint_notes"] == [f"nose, left_eye, right_eye, ..., which {tmp_path / 'four.pt'} lacks, from "
                                      "the others"]
    for j, name in enumerate(COCO17.keypoints):
        mean = (ours[names.index(name)] + theirs[j]) / 2 if name in names else theirs[j]
        torch.testing.assert_close(back["state_dict"][head][j], mean)
    torch.testing.assert_close(back["state_dict"]["regression.out.weight"][2 * 11:2 * 12],  # left_hip, as coco.pt
                               full.state_dict()["regression.out.weight"][2 * 11:2 * 12])
    wide = create_model("mobilenetv2_050", input_size=SMALL, head_channels=48)  # other keypoints, other heads
    save_checkpoint(tmp_path / "wide.pt", wide, COCO17)
    with pytest.raises(MoveNetError, match=r"wide.pt: another model than .*four.pt \(head_channels 96 -> 48\)"):
        average_checkpoints([tmp_path / "four.pt", tmp_path / "wide.pt"])
    from movenet.pretrained import load_matching  # (as init takes such weights: one line, not a traceback)
    with pytest.raises(MoveNetError, match=r"wide.pt: weights of mobilenetv2 width 0.5 do not fit"):
        load_matching(create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=4),
                      torch.load(tmp_path / "wide.pt", weights_only=False), str(tmp_path / "wide.pt"), four)
    torso = schema_from_config({**four.to_dict(), "torso": ["right_wrist", "right_ankle"]})
    save_checkpoint(tmp_path / "four_b.pt", small, torso)
    with pytest.warns(DataWarning, match="the same keypoints as .*four.pt, but another skeleton, torso"):
        average_checkpoints([tmp_path / "four.pt", tmp_path / "four_b.pt"])


def test_a_run_with_keypoints_of_its_own_averages_with_its_init_as_final_pt_mixes_them(tmp_path, capsys):
    """A run of COCO's 17 with the ankles renamed feet (started from the init's ankles) and a
    neck (started fresh), averaged with the model it started from: feet with the init's ankles,
    the neck as trained, the rest half and half. Listed the other way, the neck is said to go."""
    from movenet.cli import main
    from movenet.errors import DataWarning
    from movenet.schema import COCO17, KeypointSchema

    names = [{"left_ankle": "left_foot", "right_ankle": "right_foot"}.get(n, n) for n in COCO17.keypoints] + ["neck"]
    feet = KeypointSchema("feet", tuple(names), (), ())
    torch.manual_seed(1)
    run = create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=18)
    init = _model(2)
    save_checkpoint(tmp_path / "init.pt", init, COCO17)
    save_checkpoint(tmp_path / "last.pt", run, feet, extra={"config": {
        "init": str(tmp_path / "init.pt"), "init_keypoints": {"left_foot": "left_ankle", "right_foot": "right_ankle"}}})
    assert main(["average", str(tmp_path / "last.pt"), str(tmp_path / "init.pt"), "--out", str(tmp_path / "a.pt")]) == 0
    assert (f"left_foot from {tmp_path / 'init.pt'}'s left_ankle, right_foot from {tmp_path / 'init.pt'}'s right_ankle "
            f"(the run's init_keypoints); neck, which {tmp_path / 'init.pt'} lacks, from the others)") \
        in capsys.readouterr().out
    mixed = torch.load(tmp_path / "a.pt", weights_only=False)["state_dict"]
    for key in ("heatmap.out.weight", "offset.out.bias"):
        per = 1 if key.startswith("heatmap") else 2
        a, b = run.state_dict()[key], init.state_dict()[key]
        for i, name in enumerate(names):
            j = COCO17.keypoints.index(name.replace("foot", "ankle")) if name != "neck" else None
            want = a[per * i:per * (i + 1)] if j is None else (a[per * i:per * (i + 1)] + b[per * j:per * (j + 1)]) / 2
            torch.testing.assert_close(mixed[key][per * i:per * (i + 1)], want)
    with pytest.warns(DataWarning, match=r"last.pt: its left_foot, right_foot, neck are left out: the average has the "
                                         r"keypoints of .*init.pt, listed first"):
        back = average_checkpoints([tmp_path / "init.pt", tmp_path / "last.pt"])
    assert back["schema"]["keypoints"] == list(COCO17.keypoints)


def test_a_runs_init_is_told_by_the_file_and_only_it_starts_the_runs_keypoints(tmp_path):
    """init_keypoints (spelled otherwise too) pair a run's keypoints with its init's, the init
    named by another path to the same file (and with @SIZE); another COCO model is no init: the run's feet are
    its own there, and that model's ankles are said to be left out. The init's keypoints that
    the run leaves out on purpose (the nose) are not."""
    import warnings

    from movenet.errors import DataWarning
    from movenet.schema import COCO17, KeypointSchema

    names = [{"left_ankle": "left_foot", "right_ankle": "right_foot"}.get(n, n) for n in COCO17.keypoints[1:]]
    torch.manual_seed(1)
    run = create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=len(names))
    init, other = _model(2), _model(3)
    save_checkpoint(tmp_path / "init.pt", init)
    save_checkpoint(tmp_path / "other.pt", other)
    (tmp_path / "sub").mkdir()
    save_checkpoint(tmp_path / "last.pt", run, KeypointSchema("feet", tuple(names), (), ()), extra={"config": {
        "init": str(tmp_path / "sub" / ".." / "init.pt"),
        "init_keypoints": {"left_foot": "l_ankle", "right_foot": "right_ankle"}}})
    head = "heatmap.out.weight"
    ours = run.state_dict()[head]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        soup = average_checkpoints([tmp_path / "last.pt", f"{tmp_path / 'init.pt'}@{SMALL}"])  # (at the run's size)
    assert soup["keypoint_notes"] == [f"left_foot from {tmp_path / 'init.pt'}@{SMALL}'s left_ankle, right_foot from "
                                      f"{tmp_path / 'init.pt'}@{SMALL}'s right_ankle (the run's init_keypoints)"]
    foot, ankle = names.index("left_foot"), COCO17.index("left_ankle")
    torch.testing.assert_close(soup["state_dict"][head][foot], (ours[foot] + init.state_dict()[head][ankle]) / 2)
    with pytest.warns(DataWarning, match=r"other.pt: its nose, left_ankle, right_ankle are left out"):
        mixed = average_checkpoints([tmp_path / "last.pt", tmp_path / "other.pt"])
    assert mixed["keypoint_notes"] == [f"left_foot, right_foot, which {tmp_path / 'other.pt'} lacks, from the others"]
    torch.testing.assert_close(mixed["state_dict"][head][foot], ours[foot])
    knee = names.index("left_knee")
    torch.testing.assert_close(mixed["state_dict"][head][knee],
                               (ours[knee] + other.state_dict()[head][COCO17.index("left_knee")]) / 2)


def test_models_of_the_same_keypoints_in_another_order_average_by_name(tmp_path):
    from movenet.schema import COCO17, KeypointSchema

    first, second = _model(1), _model(2)
    save_checkpoint(tmp_path / "a.pt", first)
    save_checkpoint(tmp_path / "b.pt", second, KeypointSchema("reversed", COCO17.keypoints[::-1], (), ()))
    soup = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert soup["schema"]["keypoints"] == list(COCO17.keypoints) and "keypoint_notes" not in soup
    for key, per in (("heatmap.out.weight", 1), ("regression.out.bias", 2)):
        a, b = first.state_dict()[key], second.state_dict()[key]
        for i in (0, 5, 16):
            j = 16 - i
            torch.testing.assert_close(soup["state_dict"][key][per * i:per * (i + 1)],
                                       (a[per * i:per * (i + 1)] + b[per * j:per * (j + 1)]) / 2)


def test_models_of_no_shared_keypoints_are_not_averaged(tmp_path):
    from movenet.schema import KeypointSchema

    save_checkpoint(tmp_path / "coco.pt", _model(1))
    paws = KeypointSchema("paws", ("left_paw", "right_paw", "tail"), ((0, 1),), ())
    save_checkpoint(tmp_path / "paws.pt", create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=3), paws)
    with pytest.raises(MoveNetError, match=r"coco.pt: predicts none of .*paws.pt's keypoints \(paws: left_paw, "
                                           r"right_paw, tail\); only models of shared keypoints can be averaged"):
        average_checkpoints([tmp_path / "paws.pt", tmp_path / "coco.pt"])


def test_a_keypoint_some_models_lack_is_the_weighted_mean_of_those_that_have_it(tmp_path):
    from movenet.schema import COCO17, KeypointSchema

    four = KeypointSchema("four", ("right_wrist", "left_wrist", "right_ankle", "left_ankle"), ((0, 1), (2, 3)), ())
    models = [_model(1), _model(2), create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=4)]
    for name, model, schema in zip(("a", "b", "four"), models, (COCO17, COCO17, four)):
        save_checkpoint(tmp_path / f"{name}.pt", model, schema)
    soup = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "four.pt"], weights=[1, 3, 1])
    a, b, c = (m.state_dict()["heatmap.out.weight"] for m in models)
    out = soup["state_dict"]["heatmap.out.weight"]
    torch.testing.assert_close(out[0], (a[0] + 3 * b[0]) / 4)  # the nose: a's and b's
    torch.testing.assert_close(out[9], (a[9] + 3 * b[9] + c[1]) / 5)  # left_wrist: all three
    # a keypoint only models weighted 0 have (the run's own neck, the run weighted 0): theirs
    neck = KeypointSchema("neck18", (*COCO17.keypoints, "neck"), COCO17.flip_pairs, ())
    run = create_model("mobilenetv2_050", input_size=SMALL, num_keypoints=18)
    save_checkpoint(tmp_path / "run.pt", run, neck)
    soup = average_checkpoints([tmp_path / "run.pt", tmp_path / "a.pt"], weights=[0, 1])
    out = soup["state_dict"]["heatmap.out.weight"]
    torch.testing.assert_close(out[17], run.state_dict()["heatmap.out.weight"][17])
    torch.testing.assert_close(out[:17], a)


def test_keypoints_spelled_otherwise_average_by_name_without_a_warning(tmp_path):
    """OpenPose's LShoulder is COCO's left_shoulder: nothing is left out, nothing to note."""
    import warnings

    from movenet.errors import DataWarning
    from movenet.schema import COCO17, KeypointSchema

    spelled = {"left_shoulder": "LShoulder", "right_shoulder": "RShoulder"}
    names = tuple(spelled.get(n, n) for n in COCO17.keypoints)
    first, second = _model(1), _model(2)
    save_checkpoint(tmp_path / "op.pt", first, KeypointSchema("op", names, COCO17.flip_pairs, COCO17.skeleton,
                                                              COCO17.sigmas))
    save_checkpoint(tmp_path / "coco.pt", second)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        soup = average_checkpoints([tmp_path / "op.pt", tmp_path / "coco.pt"])
    assert soup["schema"]["keypoints"] == list(names) and "keypoint_notes" not in soup
    a, b = first.state_dict()["heatmap.out.weight"], second.state_dict()["heatmap.out.weight"]
    torch.testing.assert_close(soup["state_dict"]["heatmap.out.weight"][5], (a[5] + b[5]) / 2)
