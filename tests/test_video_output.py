"""`run_video`'s written video and its checks on tiny synthetic clips, with stub trackers in
place of a model: colours as read, the read-back count, ids on --multi, a stream --out, odd
frame sizes, the progress bar and the capture's release."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

import movenet.video
from movenet.errors import MoveNetError
from movenet.video import VideoSource, open_source, run_video

BGR = (40, 110, 200)  # a colour whose channels differ clearly


def write_clip(path, frames: int = 5, size=(64, 48), bgr=BGR):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for _ in range(frames):
        writer.write(np.full((size[1], size[0], 3), bgr, np.uint8))
    writer.release()
    return path


class NobodyTracker:
    """PoseTracker's place: 17 keypoints that score 0 (nothing is drawn)."""

    def __init__(self, predictor, **kwargs):
        pass

    def __call__(self, frame, timestamp=None):
        return np.zeros((17, 3), np.float32)


class OnePersonMulti:
    """MultiPoseTracker's place: one confident person, id 7."""

    def __init__(self, predictor, **kwargs):
        pass

    def __call__(self, frame, timestamp=None):
        kpts = np.zeros((1, 17, 3), np.float32)
        kpts[0, :, :2] = (30, 20)
        kpts[0, :, 2] = 0.9
        return kpts, np.array([0.9]), np.array([7])


@pytest.fixture
def stub_trackers(monkeypatch):
    monkeypatch.setattr(movenet.video, "PoseTracker", NobodyTracker)
    monkeypatch.setattr(movenet.video, "MultiPoseTracker", OnePersonMulti)


def first_frame(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def test_written_frames_keep_their_colours(tmp_path, stub_trackers):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out.mp4"
    run_video(str(clip), object(), out=str(out), progress=False)
    centre = first_frame(out)[24, 32].astype(int)
    assert np.abs(centre - BGR).max() <= 20, centre


def test_a_video_missing_one_frame_when_read_back_is_an_error(tmp_path, stub_trackers, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4")
    real = cv2.VideoWriter

    class DropsTheLast:
        def __init__(self, *args):
            self.writer, self.frames = real(*args), 0

        def write(self, frame):
            self.frames += 1
            if self.frames < 5:
                self.writer.write(frame)

        def __getattr__(self, name):
            return getattr(self.writer, name)

    monkeypatch.setattr(movenet.video.cv2, "VideoWriter", DropsTheLast)
    with pytest.raises(MoveNetError, match=r"4 of the 5 frames written can be read back"):
        run_video(str(clip), object(), out=str(tmp_path / "out.mp4"), progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_multi_person_video_shows_each_persons_id(tmp_path, stub_trackers, monkeypatch):
    calls = []
    real = movenet.video.draw_ids
    monkeypatch.setattr(movenet.video, "draw_ids", lambda img, kpts, ids, threshold: (
        calls.append(list(ids)), real(img, kpts, ids, threshold))[1])
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    run_video(str(clip), object(), out=str(tmp_path / "out.mp4"), multi=True, progress=False)
    assert calls == [[7], [7]]


def test_a_pipe_as_out_is_refused_before_the_source_is_opened(tmp_path, monkeypatch):
    fifo = tmp_path / "out.mp4"
    os.mkfifo(fifo)

    def opened(source):  # (writing an mp4 into a pipe nobody reads would block)
        raise AssertionError("the source was opened")

    monkeypatch.setattr(movenet.video, "open_source", opened)
    with pytest.raises(MoveNetError, match=r"out.mp4: an mp4 is written with its index last, so it must be a file"):
        run_video(str(tmp_path / "clip.mp4"), object(), out=str(fifo), progress=False)


class FakeCapture:
    def __init__(self, frames):
        self.frames, self.released = list(frames), False

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
        self.released = True


def fake_source(frames) -> VideoSource:
    first, *rest = frames
    return VideoSource(FakeCapture(rest), "clip.mp4", False, 10.0, first.shape[1], first.shape[0], len(frames),
                       first)


def test_a_frame_of_another_width_is_an_error_and_the_capture_is_released(tmp_path, stub_trackers):
    source = fake_source([np.zeros((48, 64, 3), np.uint8), np.zeros((48, 60, 3), np.uint8)])
    with pytest.raises(MoveNetError, match=r"clip.mp4: frame 1 is 60x48, the video says 64x48"):
        run_video(source, object(), json_out=str(tmp_path / "v.jsonl"), progress=False)
    assert source.capture.released
    assert not (tmp_path / "v.jsonl").exists()


def test_the_capture_is_released_after_a_complete_run(tmp_path, stub_trackers):
    source = fake_source([np.zeros((48, 64, 3), np.uint8)] * 3)
    assert run_video(source, object(), json_out=str(tmp_path / "v.jsonl"), progress=False)["frames"] == 3
    assert source.capture.released


def test_no_progress_bar_when_progress_is_off(tmp_path, stub_trackers, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), progress=False)
    assert capsys.readouterr().err == ""
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), progress=True)
    assert "clip.mp4" in capsys.readouterr().err


def test_a_folder_as_source_is_named(tmp_path):
    with pytest.raises(MoveNetError, match=f"^{tmp_path}: is a directory$"):
        open_source(str(tmp_path))


def test_a_file_named_like_a_camera_index_is_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_clip(tmp_path / "clip.mp4", frames=3).rename(tmp_path / "0")
    source = open_source("0")
    source.capture.release()
    assert not source.is_camera and source.name == "0" and (source.width, source.height) == (64, 48)


def test_ids_are_written_above_confident_keypoints_only(tmp_path):
    from movenet.video import draw_ids

    kpts = np.zeros((2, 17, 3), np.float32)
    kpts[0, :, :2], kpts[0, :, 2] = (100, 120), 0.1  # nobody the threshold lets through
    kpts[1, :, :2], kpts[1, :, 2] = (150, 150), 0.9
    kpts[1, 0] = (5, 5, 0.1)  # one unconfident keypoint near the corner
    img = draw_ids(np.zeros((200, 200, 3), np.uint8), kpts, np.array([3, 4]), threshold=0.3)
    ys, xs = np.nonzero(img.any(axis=2))
    assert len(xs) and xs.min() >= 145 and ys.max() <= 150  # only id 4, above its confident keypoints
    kpts[1, :, 1] = 3  # a person at the top edge: the id stays in the image
    img = draw_ids(np.zeros((200, 200, 3), np.uint8), kpts, np.array([3, 4]), threshold=0.3)
    assert img.any(axis=2)[:, 145:].sum() > 20


def test_the_progress_bar_counts_to_max_frames_or_to_the_files_length(tmp_path, stub_trackers, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), max_frames=2, progress=True)
    assert "2/2" in capsys.readouterr().err
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), max_frames=9, progress=True)
    assert "5/5" in capsys.readouterr().err


class InterruptedTracker:
    """PoseTracker's place: Ctrl-C during the first frame."""

    def __init__(self, predictor, **kwargs):
        pass

    def __call__(self, frame, timestamp=None):
        raise KeyboardInterrupt


def test_ctrl_c_before_a_cameras_first_frame_is_an_interrupt_not_an_empty_output(tmp_path, monkeypatch):
    monkeypatch.setattr(movenet.video, "PoseTracker", InterruptedTracker)
    first = np.zeros((48, 64, 3), np.uint8)
    camera = VideoSource(FakeCapture([first]), "camera 0", True, 30.0, 64, 48, None, first)
    with pytest.raises(KeyboardInterrupt):
        run_video(camera, object(), json_out=str(tmp_path / "cam.jsonl"), progress=False)
    assert camera.capture.released and list(tmp_path.iterdir()) == []


def test_the_trackers_get_the_options_asked_for(tmp_path, monkeypatch):
    made = []

    class Recorder(NobodyTracker):
        def __init__(self, predictor, **kwargs):
            made.append(kwargs)

    monkeypatch.setattr(movenet.video, "PoseTracker", Recorder)
    monkeypatch.setattr(movenet.video, "MultiPoseTracker", lambda predictor, **kwargs: made.append(kwargs) or
                        OnePersonMulti(predictor))
    clip = write_clip(tmp_path / "clip.mp4", frames=1)
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), smooth=False, track=False, refine=False,
              smoothing="tfjs", progress=False)
    run_video(str(clip), object(), json_out=str(tmp_path / "v.jsonl"), multi=True, smooth=False, track=False,
              refine=False, max_people=2, progress=False)
    from movenet.tracking import TFJS_ONE_EURO

    single, multi = made
    assert (single["smooth"], single["track"], single["refine"], single["filter_params"]) == (
        False, False, False, TFJS_ONE_EURO)
    assert (multi["smooth"], multi["track"], multi["refine"], multi["max_people"]) == (False, False, False, 2)


def test_a_video_that_does_not_give_its_rate_or_length_gets_30_fps_and_no_count(tmp_path, monkeypatch):
    class Silent:  # (a stream or container that says neither)
        def __init__(self, source):
            pass

        def isOpened(self):
            return True

        def read(self):
            return True, np.zeros((48, 64, 3), np.uint8)

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    monkeypatch.setattr(movenet.video.cv2, "VideoCapture", Silent)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    source = open_source(str(tmp_path / "clip.mp4"))
    assert (source.fps, source.frame_count, source.width, source.height) == (30.0, None, 64, 48)


def test_a_writer_that_cannot_open_is_said_at_once(tmp_path, stub_trackers, monkeypatch):
    real = cv2.VideoWriter

    class Closed:
        def __init__(self, *args):
            self.writer = real(*args)

        def isOpened(self):
            return False

        def __getattr__(self, name):
            return getattr(self.writer, name)

    monkeypatch.setattr(movenet.video.cv2, "VideoWriter", Closed)
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(MoveNetError, match=r"out.mp4: cannot write an mp4v video here"):
        run_video(str(clip), object(), out=str(tmp_path / "out.mp4"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    monkeypatch.setattr(movenet.video.cv2, "VideoWriter", real)
    dot = tmp_path / "dot.avi"  # (mp4v takes no 1x1 frames)
    writer = cv2.VideoWriter(str(dot), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1, 1))
    writer.write(np.zeros((1, 1, 3), np.uint8))
    writer.release()
    with pytest.raises(MoveNetError, match=r"out.mp4: cannot write an mp4v video of 1x1 frames \(--json alone writes the keypoints\)$"):
        run_video(str(dot), object(), out=str(tmp_path / "out.mp4"), progress=False)
