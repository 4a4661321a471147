"""`movenet benchmark`'s numbers: which runs are counted, the table's ratios, the JSON report,
labels of repeated entries and the settings, on stub predictors and a fake clock."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from movenet import benchmark
from movenet.benchmark import Timing, format_table, measure, report_dict, run_benchmark


class Stub:
    input_size = 64

    def preprocess(self, img):
        return np.zeros((1, 3, 64, 64), np.float32), (0, 0, 64, 64)

    def run(self, batch):
        return None


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((16, 16, 3), np.uint8))
    return path


@pytest.fixture
def ticks(monkeypatch):
    """Each timed run takes 1, 2, 3... ms, in the order the runs happen."""
    import movenet.tracking

    clock = itertools.count(1)
    monkeypatch.setattr(benchmark, "_time_ms", lambda fn: (fn(), float(next(clock)))[1])
    monkeypatch.setattr(movenet.tracking, "predict_person", lambda *a, **k: None)


def test_the_first_run_of_each_block_is_not_counted(image, ticks):
    a, b = measure({"a": Stub(), "b": Stub()}, image, runs=2, warmup=0, progress=False, block=3)
    # one round: a's block 1 2 3, b's 4 5 6 (model only), then a's 7 8 9, b's 10 11 12 (end to end)
    assert (a.model_ms, b.model_ms) == ([2.0, 3.0], [5.0, 6.0])
    assert (a.e2e_ms, b.e2e_ms) == ([8.0, 9.0], [11.0, 12.0])


def test_blocks_measure_as_many_runs_as_asked(image, ticks):
    (a,) = measure({"a": Stub()}, image, runs=3, warmup=0, progress=False, block=2)
    # three rounds of a block of two, the first of each not counted
    assert a.model_ms == [2.0, 6.0, 10.0] and a.e2e_ms == [4.0, 8.0, 12.0]


def test_warmup_rounds_are_not_counted(image, ticks):
    (a,) = measure({"a": Stub()}, image, runs=2, warmup=1, progress=False)
    # rounds of one run per phase: 1 (model) 2 (e2e) warm up, then 3 4, 5 6
    assert (a.model_ms, a.e2e_ms) == ([3.0, 5.0], [4.0, 6.0])


def test_stats_are_median_p90_and_frames_per_second():
    t = Timing("a", [float(v) for v in range(1, 11)], [40.0] * 3)
    assert t.stats("model") == {"median": 5.5, "p90": pytest.approx(9.1), "fps": pytest.approx(1000 / 5.5)}
    assert t.stats("e2e") == {"median": 40.0, "p90": 40.0, "fps": 25.0}


def test_ratios_are_medians_over_the_first_models():
    table = format_table([Timing("a", [10.0], [20.0]), Timing("b", [30.0], [10.0])])
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [cells[0].strip() for cells in rows] == ["a", "b"]
    assert [(cells[4].strip(), cells[8].strip()) for cells in rows] == [("1.00", "1.00"), ("3.00", "0.50")]


def test_json_report_keeps_model_and_end_to_end_apart():
    report = report_dict([Timing("a", [1.0, 2.0, 3.0], [10.0, 20.0, 30.0])], {"runs": 3})
    (entry,) = report["models"]
    assert report["settings"] == {"runs": 3}
    assert entry["label"] == "a"
    assert entry["model_ms"]["median"] == 2.0 and entry["end_to_end_ms"]["median"] == 20.0


def test_repeated_entries_get_their_own_labels_and_settings_say_how_they_ran(image, monkeypatch):
    seen = {}

    def fake_measure(predictors, img, runs, warmup, block=1, refine=False):
        seen.update(predictors)
        return [Timing(k, [1.0], [1.0]) for k in predictors]

    monkeypatch.setattr(benchmark, "open_model", lambda entry, base, threads: ("torch:x", Stub()))
    monkeypatch.setattr(benchmark, "measure", fake_measure)
    timings, settings = run_benchmark(["torch", "torch"], "x", 1, runs=3, warmup=0, image=image, block=2,
                                      refine=True)
    assert list(seen) == ["torch:x", "torch:x'"] and [t.label for t in timings] == list(seen)
    assert {k: settings[k] for k in ("threads", "runs", "warmup", "block", "refine")} == {
        "threads": 1, "runs": 3, "warmup": 0, "block": 2, "refine": True}
