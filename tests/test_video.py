"""`movenet video`: outputs, JSON lines schema, frame count, multi-person ids, bad input, and
outputs that are complete or absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.video import run_video

ONE_THREAD = ["--threads", "1"]  # the CPU is shared: one thread is faster than several contending


@pytest.fixture(scope="module")
def media(shared_dir):
    return shared_dir / "data" / "media"


@pytest.fixture(scope="module")
def predictor(lightning):
    from movenet.predict import TorchPredictor

    return TorchPredictor(lightning)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_info(path) -> tuple[int, float, int, int]:
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.read()[0]:
        frames += 1
    info = (frames, cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    return info


def test_video_and_json_lines(tmp_path, media, lightning):
    out, js = tmp_path / "yoga.mp4", tmp_path / "yoga.jsonl"
    rc = main(["video", str(media / "yoga.mp4"), "--out", str(out), "--json", str(js), "--max-frames", "6"]
              + ONE_THREAD)
    assert rc == 0
    assert video_info(out) == (6, 25.0, 360, 360)
    lines = read_jsonl(js)
    assert [r["frame"] for r in lines] == list(range(6))
    assert [r["time"] for r in lines] == pytest.approx([i / 25 for i in range(6)])
    for r in lines:
        (person,) = r["people"]
        kpts = np.asarray(person["keypoints"])
        assert kpts.shape == (17, 3) and 0 <= person["score"] <= 1
        assert r["keypoint_names"][:2] == ["nose", "left_eye"] and len(r["keypoint_names"]) == 17
        assert (kpts[:, :2] >= -50).all() and (kpts[:, :2] <= 410).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yoga.jsonl", "yoga.mp4"]  # no temporary files


def test_person_schema_is_that_of_predict(tmp_path, media, lightning):
    from movenet.draw import write_image

    cap = cv2.VideoCapture(str(media / "yoga.mp4"))
    write_image(tmp_path / "first.png", cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB))
    # the whole frame without smoothing is exactly predict's looks (lossless PNG of the frame):
    # two by default, one with --no-refine
    people = {}
    for refine in ([], ["--no-refine"]):
        js = tmp_path / f"v{len(refine)}.jsonl"
        assert main(["video", str(media / "yoga.mp4"), "--json", str(js), "--max-frames", "1", "--no-track",
                     "--no-smooth", *refine] + ONE_THREAD) == 0
        pj = tmp_path / f"p{len(refine)}.json"
        assert main(["predict", str(tmp_path / "first.png"), "--json", str(pj), *refine] + ONE_THREAD) == 0
        people[bool(refine)] = read_jsonl(js)[0]["people"]
        assert people[bool(refine)] == json.loads(pj.read_text())[0]["people"]
    assert people[True] != people[False]


def test_full_video_one_json_line_per_frame(tmp_path, media, lightning):
    js = tmp_path / "all.jsonl"
    assert main(["video", str(media / "yoga.mp4"), "--json", str(js)] + ONE_THREAD) == 0
    cap = cv2.VideoCapture(str(media / "yoga.mp4"))
    assert len(read_jsonl(js)) == int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 140
    assert not (tmp_path / "movenet-output").exists()


def test_multi_person_ids(tmp_path, media, lightning):
    out, js = tmp_path / "ped.mp4", tmp_path / "ped.jsonl"
    assert main(["video", str(media / "pedestrians.avi"), "--multi", "--out", str(out), "--json", str(js),
                 "--max-frames", "4"] + ONE_THREAD) == 0
    assert video_info(out)[0] == 4 and video_info(out)[2:] == (768, 576)
    lines = read_jsonl(js)
    assert len(lines) == 4
    ids_per_frame = [[p["id"] for p in r["people"]] for r in lines]
    assert all(len(ids) == len(set(ids)) for ids in ids_per_frame)
    assert sum(len(ids) for ids in ids_per_frame) >= 4  # people walking there are found
    first, last = set(ids_per_frame[0]), set(ids_per_frame[-1])
    assert first & last  # someone keeps their id
    for r in lines:
        for p in r["people"]:
            assert set(p) == {"keypoints", "score", "id"} and np.asarray(p["keypoints"]).shape == (17, 3)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movenet.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_bad_sources_are_one_line_errors(tmp_path):
    (tmp_path / "text.mp4").write_text("not a video\n")
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    writer.release()
    cases = {str(tmp_path / "missing.mp4"): "file not found", str(tmp_path / "text.mp4"): "not a readable video",
             str(empty): "no frames", str(tmp_path): "is a directory", "99": "camera 99: cannot be opened"}
    for source, message in cases.items():
        r = run_cli("video", source, "--json", str(tmp_path / "out.jsonl"))
        assert r.returncode != 0, source
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("movenet: error: "), r.stderr
        assert message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.avi", "text.mp4"]


def test_a_video_whose_frames_cannot_be_decoded_names_its_codec(tmp_path, monkeypatch):
    """An AV1 file (phones, browsers) opens, declares its frames and decodes none in OpenCV's
    FFmpeg: the error names the codec and the way out, not an empty video."""
    from movenet.video import fourcc, open_source

    clip = tmp_path / "phone.mp4"
    clip.write_bytes(b"\0" * 64)

    class AV1Capture:  # what OpenCV's capture says of such a file
        def __init__(self, path):
            self.released = False

        def isOpened(self):
            return True

        def read(self):
            return False, None

        def get(self, prop):
            return {cv2.CAP_PROP_FRAME_COUNT: 40.0, cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"AV01")),
                    cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

        def release(self):
            self.released = True

    monkeypatch.setattr(cv2, "VideoCapture", AV1Capture)
    with pytest.raises(MoveNetError, match=f"{clip}: its AV01 frames cannot be decoded here .* ffmpeg -i IN -c:v "
                                           "libx264 OUT.mp4$"):
        open_source(str(clip))
    monkeypatch.undo()
    writer = cv2.VideoWriter(str(tmp_path / "m.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert fourcc(cv2.VideoCapture(str(tmp_path / "m.avi"))) == "MJPG"


def test_the_annotated_video_keeps_the_sources_time():
    from movenet.video import OutputClock

    def video(times, fps, **kw) -> list[int]:
        clock = OutputClock(fps, **kw)
        return [clock.repeats(t) for t in times]

    assert video([i / 25 for i in range(140)], 25) == [1] * 140  # constant rate: each frame once
    assert video([i * 0.04 + 1e-9 * (-1) ** i for i in range(140)], 25) == [1] * 140  # (timestamps' rounding)
    jitter = np.random.default_rng(0).normal(0, 0.005, 300)  # a 30 fps camera read 5 ms early or late
    assert video(np.arange(300) / 30 + jitter, 30) == [1] * 300
    assert video([0, 0.1, 0.2], 30) == [1, 3, 3]  # 10 fps shown at 30: each frame three times (the last once)
    assert video([0, 0.01, 0.02, 0.034, 0.04], 30) == [1, 1, 0, 1, 0]  # a burst: left out over a frame ahead
    assert video([5.0, 5.04], 25) == [1, 1]  # (a camera's clock does not start at 0)
    clock = OutputClock(10, max_gap_s=2.0)  # a 10-minute jump: 2 s of it, then the time goes on from there
    assert [clock.repeats(t) for t in (0, 0.1, 600.1, 600.2)] == [1, 1, 21, 1] and clock.shortened == pytest.approx(597.9)


def test_a_network_stream_is_read_live_and_its_password_is_not_shown(tmp_path):
    """A URL (an IP camera's rtsp://, here a clip served over http:// on this machine) is read as
    a stream: its frames predicted, the outputs named after it; one that cannot be opened is a
    one-line error that hides the URL's password."""
    import functools
    import http.server
    import threading

    from movenet.checkpoint import save_checkpoint
    from movenet.model import create_model
    from movenet.video import shown_url, source_stem

    assert shown_url("rtsp://admin:s3cret@10.0.0.9:554/live/ch1") == "rtsp://admin:***@10.0.0.9:554/live/ch1"
    assert shown_url("http://host/a:b@c") == "http://host/a:b@c"  # (no password there)
    assert shown_url("rtsp://admin:p@ss@cam/x") == "rtsp://admin:***@cam/x"  # (FFmpeg reads up to the last @)
    assert shown_url("http://cam/video.cgi?user=admin&pwd=s3cret&res=1") == "http://cam/video.cgi?user=admin&pwd=***&res=1"
    assert [source_stem(s) for s in ("rtsp://10.0.0.9:554/live/ch1.sdp", "rtsp://cam.local", "clip.mp4")] == \
        ["ch1", "cam.local", "clip"]
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, create_model("mobilenetv2_050", input_size=64))
    served = tmp_path / "served"
    served.mkdir()
    writer = cv2.VideoWriter(str(served / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        writer.write(cv2.circle(np.full((48, 64, 3), 8 * i, np.uint8), (10 + i, 24), 5, (0, 0, 255), -1))
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
        js = tmp_path / "stream.jsonl"
        assert main(["video", url, "--model", str(model), "--json", str(js)]) == 0
        frames = read_jsonl(js)
        assert [f["frame"] for f in frames] == list(range(12))
        assert np.allclose([f["time"] for f in frames], np.arange(12) / 10, atol=1e-3)
    finally:
        server.shutdown()
        server.server_close()
    r = run_cli("video", f"http://me:s3cret@127.0.0.1:{server.server_address[1]}/clip.avi", "--json",
                str(tmp_path / "none.jsonl"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"movenet: error: http://me:***@127.0.0.1:{server.server_address[1]}/clip.avi: "
                               "cannot be opened") and "s3cret" not in r.stderr
    assert not (tmp_path / "none.jsonl").exists()
    r = run_cli("video", "rtsp://me:s3cret@127.0.0.1:1/live", "--json", str(tmp_path / "none.jsonl"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "s3cret" not in r.stderr, r.stderr
    assert "try RTSP over TCP: OPENCV_FFMPEG_CAPTURE_OPTIONS='rtsp_transport;tcp'" in r.stderr


def test_an_ip_cameras_mjpeg_stream_is_timed_by_the_clock(tmp_path):
    """What cheap IP cameras serve: JPEGs over HTTP (multipart/x-mixed-replace), here 8 frames at
    10 fps. Such a stream carries no timestamps (FFmpeg makes up 25 fps ones): its times are the
    clock's, as a camera's, and the annotated video lasts as long as the stream did."""
    import http.server
    import threading
    import time as clock

    from movenet.model import create_model
    from movenet.predict import TorchPredictor

    tiny = TorchPredictor(create_model("mobilenetv2_050", input_size=64))  # (loaded before the stream opens)
    jpegs = [cv2.imencode(".jpg", np.full((48, 64, 3), 20 * i, np.uint8))[1].tobytes() for i in range(12)]

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for jpeg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                     + jpeg + b"\r\n")
                    self.wfile.flush()
                    clock.sleep(0.1)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
        summary = run_video(url, tiny, json_out=str(tmp_path / "cam.jsonl"), out=str(tmp_path / "cam.mp4"),
                            progress=False)
        assert summary["ended"] and summary["frames"] == len(jpegs)  # (the stream's end: a live source's)
    finally:
        server.shutdown()
        server.server_close()
    times = [f["time"] for f in read_jsonl(tmp_path / "cam.jsonl")]
    # (FFmpeg reads the first frames at once while it opens the stream; then they come as sent)
    assert len(times) >= 10 and times[-1] - times[-6] > 0.4  # (made-up times: 0.2)
    count, fps = video_info(tmp_path / "cam.mp4")[:2]
    assert abs(count - (round((times[-1] - times[0]) * fps) + 1)) <= 1


def test_an_interlaced_video_is_named_or_read_right(capfd):
    """tests/data/interlaced.mp4: 3 interlaced H.264 frames (64x64, a white disc at (20 + 4i, 32)
    on grey). OpenCV 5's FFmpeg cannot convert them and hands back blank frames or stale memory,
    saying so only in its log: that is a one-line error naming the cause and the way out. An
    OpenCV that converts them must give the disc."""
    from movenet.video import open_source

    clip = Path(__file__).parent / "data" / "interlaced.mp4"
    refused = False
    try:
        source = open_source(str(clip))
    except MoveNetError as e:
        refused = True
        assert str(e) == (f"{clip}: an interlaced video (TV, DVD, a camcorder's 1080i), which OpenCV's FFmpeg cannot "
                          "convert (its frames come back blank); deinterlace it first: "
                          "ffmpeg -i IN -vf yadif -c:v libx264 OUT.mp4")
    else:
        frame = source.read()
        source.capture.release()
        bright = np.argwhere(frame.min(axis=2) > 200)
        assert len(bright) > 100 and np.allclose(bright.mean(axis=0), (32, 20), atol=1.5)
    assert capfd.readouterr().err == ""  # (FFmpeg's own lines kept off the terminal)
    for level in ("-8", "16"):  # a user's FFmpeg log level (quiet; or OpenCV's print to stdout) changes nothing
        r = subprocess.run([sys.executable, "-m", "movenet.cli", "video", str(clip), "--json", "/dev/stdout"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OPENCV_FFMPEG_LOGLEVEL": level})
        if refused:
            assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (level, r.stdout, r.stderr)
            assert "an interlaced video" in r.stderr
        else:
            assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and "[" not in r.stdout[:1]


def test_muffled_keeps_what_c_code_writes_to_stderr(capfd, monkeypatch):
    from movenet.video import Muffled

    muffled = Muffled()
    with muffled:
        os.write(2, b"[swscaler @ 0x1] Cannot convert interlaced\n")
    os.write(2, b"after\n")
    assert muffled.said() == ["[swscaler @ 0x1] Cannot convert interlaced"] and muffled.said() == []
    assert capfd.readouterr().err == "after\n"
    monkeypatch.setattr(sys, "stderr", None)  # (pythonw, a service: no Python stderr to flush)
    with muffled:
        os.write(2, b"kept\n")
    assert muffled.said() == ["kept"]


class FailingPredictor:
    """Wraps a predictor and raises ``error`` on the call number ``after``."""

    def __init__(self, predictor, after: int, error: BaseException):
        self.predictor, self.after, self.error, self.calls = predictor, after, error, 0

    def __call__(self, img, box=None):
        self.calls += 1
        if self.calls > self.after:
            raise self.error
        return self.predictor(img, box)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("backend died")])
def test_failure_leaves_no_partial_outputs(tmp_path, media, predictor, error):
    out, js = tmp_path / "v.mp4", tmp_path / "v.jsonl"
    js.write_text("previous complete output\n")
    with pytest.raises(type(error)):
        run_video(str(media / "yoga.mp4"), FailingPredictor(predictor, 3, error), out=str(out),
                  json_out=str(js), progress=False)
    assert not out.exists()
    assert js.read_text() == "previous complete output\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.jsonl"]


def test_a_video_cut_short_by_a_full_disk_is_an_error_not_an_output(tmp_path, media, predictor, monkeypatch):
    """OpenCV's writer drops frames it cannot write without a word (a full disk): the video is
    read back before it is kept."""
    import movenet.video

    real = cv2.VideoWriter

    class DiskFills:  # takes 2 frames, then has no room
        def __init__(self, *args):
            self.writer, self.frames = real(*args), 0

        def write(self, frame):
            self.frames += 1
            if self.frames <= 2:
                self.writer.write(frame)

        def __getattr__(self, name):
            return getattr(self.writer, name)

    monkeypatch.setattr(movenet.video.cv2, "VideoWriter", DiskFills)
    out = tmp_path / "v.mp4"
    with pytest.raises(MoveNetError, match=r"v.mp4: cannot write \(2 of the 5 frames written can be read back; "
                                           r"is the disk full\?\)"):
        run_video(str(media / "yoga.mp4"), predictor, out=str(out), json_out=str(tmp_path / "v.jsonl"), max_frames=5,
                  progress=False)
    assert list(tmp_path.iterdir()) == []  # the frames' JSON lines go with the video they describe
    monkeypatch.undo()
    run_video(str(media / "yoga.mp4"), predictor, out=str(out), max_frames=5, progress=False)
    assert video_info(out)[0] == 5


def test_max_frames_must_be_positive(media, predictor):
    with pytest.raises(MoveNetError, match="--max-frames"):
        run_video(str(media / "yoga.mp4"), predictor, json_out=None, max_frames=0, progress=False)


def test_onnx_backend_matches_torch(tmp_path, media, lightning):
    outs = {}
    for backend in ("torch", "onnx"):
        js = tmp_path / f"{backend}.jsonl"
        assert main(["video", str(media / "yoga.mp4"), "--backend", backend, "--json", str(js),
                     "--max-frames", "3", "--no-smooth"] + ONE_THREAD) == 0
        outs[backend] = np.array([r["people"][0]["keypoints"] for r in read_jsonl(js)])
    confident = outs["torch"][..., 2] > 0.3
    assert confident.sum() > 20
    np.testing.assert_allclose(outs["onnx"][confident][:, :2], outs["torch"][confident][:, :2], atol=1.0)


def test_ctrl_c_ends_a_camera_capture_and_keeps_it(tmp_path, media, predictor):
    from movenet.video import VideoSource, open_source

    source = open_source(str(media / "yoga.mp4"))
    camera = VideoSource(**{**source.__dict__, "is_camera": True, "name": "camera 0", "frame_count": None})
    js = tmp_path / "cam.jsonl"
    summary = run_video(camera, FailingPredictor(predictor, 3, KeyboardInterrupt()), json_out=str(js),
                        progress=False)
    assert summary["frames"] == 3 and len(read_jsonl(js)) == 3


def test_smoothing_presets(tmp_path, media, predictor):
    """``--smoothing tfjs`` is PoseTracker with TF.js' One Euro values; the default smooths more."""
    from movenet.tracking import TFJS_ONE_EURO, PoseTracker, keypoint_jitter

    tracks = {}
    for preset in ("default", "tfjs"):
        js = tmp_path / f"{preset}.jsonl"
        assert main(["video", str(media / "yoga.mp4"), "--json", str(js), "--max-frames", "12", "--no-track",
                     "--smoothing", preset] + ONE_THREAD) == 0
        tracks[preset] = np.array([r["people"][0]["keypoints"] for r in read_jsonl(js)])
    cap = cv2.VideoCapture(str(media / "yoga.mp4"))
    tracker = PoseTracker(predictor, track=False, filter_params=TFJS_ONE_EURO)
    direct = np.stack([tracker(cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB), i / 25) for i in range(12)])
    np.testing.assert_allclose(tracks["tfjs"][..., :2], direct[..., :2], atol=0.01)
    assert keypoint_jitter(tracks["default"]) < keypoint_jitter(tracks["tfjs"])
    with pytest.raises(MoveNetError, match="unknown smoothing"):
        run_video(str(media / "yoga.mp4"), predictor, smoothing="none", progress=False)


class CountingRuns:
    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __call__(self, img, box=None):
        return self.predictor(img, box)

    def run(self, batch):
        self.calls += 1
        return self.predictor.run(batch)


def test_multi_refine_looks_again_and_no_refine_does_not(tmp_path, media, predictor):
    passes = {}
    for refine in (True, False):
        counting = CountingRuns(predictor)
        run_video(str(media / "pedestrians.avi"), counting, json_out=str(tmp_path / "p.jsonl"), multi=True,
                  track=False, refine=refine, max_frames=2, progress=False)
        passes[refine] = counting.calls
    assert passes[False] == 2  # one pass per frame
    assert passes[True] > 2


def test_a_phone_video_with_rotation_metadata_is_read_upright(tmp_path):
    """Phones store portrait videos as landscape frames plus a rotation in the track header:
    OpenCV turns the frames upright (CAP_PROP_ORIENTATION_AUTO, on by default), which this keeps."""
    import struct

    from movenet.video import open_source

    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:10, :20] = 255  # a block in the top-left corner of the stored frames
    writer = cv2.VideoWriter(str(tmp_path / "plain.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        writer.write(stored)
    writer.release()
    data = bytearray((tmp_path / "plain.mp4").read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0  # version 0 track header
    matrix = tkhd + 4 + 4 + 20 + 8 + 8  # after version/flags, times, track id, duration, reserved, layer..volume
    assert struct.unpack(">9i", data[matrix:matrix + 36]) == (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # 90 degrees
    (tmp_path / "phone.mp4").write_bytes(data)
    source = open_source(str(tmp_path / "phone.mp4"))
    assert (source.width, source.height) == (48, 64)
    block = np.argwhere(source.read()[..., 0] > 128).mean(axis=0)  # turned right: now top-right
    source.capture.release()
    assert block[0] < 16 and block[1] > 32


def test_a_video_that_ends_before_its_declared_length_is_warned_about():
    from types import SimpleNamespace

    from movenet.errors import DataWarning
    from movenet.video import _check_length

    cut = SimpleNamespace(name="clip.mp4", is_camera=False, is_stream=False, frame_count=140, fps=25.0, time=46 / 25)
    with pytest.warns(DataWarning, match=r"clip.mp4: 47 of the 140 frames the file declares could be read"):
        _check_length(cut, 47)
    with pytest.warns(DataWarning, match=r"clip.mp4: 47 of the 140"):  # (no time: the count decides)
        _check_length(SimpleNamespace(**{**cut.__dict__, "time": None}), 47)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_length(cut, 139)  # containers' counts are estimates
        # fewer frames than the declared count, but the last one is at its end: variable frame rate
        _check_length(SimpleNamespace(**{**cut.__dict__, "time": 139 / 25}), 47)
        _check_length(SimpleNamespace(name="camera 0", is_camera=True, is_stream=False, frame_count=None, fps=30.0,
                                      time=None), 3)
        _check_length(SimpleNamespace(**{**cut.__dict__, "is_stream": True}), 47)  # (a stream may stop at any time)


def test_a_variable_frame_rate_video_is_whole_and_timed_by_its_own_clock(tmp_path, capsys):
    """tests/data/vfr.webm: 30 frames 33 and 100 ms apart in turn, declared 30 fps (OpenCV counts
    58 frames from its duration). It exits 0, and the JSON times and the smoothing take the
    file's timestamps; cut in half, it is an error."""
    from movenet.checkpoint import save_checkpoint
    from movenet.errors import DataWarning
    from movenet.model import create_model

    model = tmp_path / "tiny.pt"
    save_checkpoint(model, create_model("mobilenetv2_050", input_size=64))
    whole = Path(__file__).parent / "data" / "vfr.webm"
    data = whole.read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[:len(data) // 2])
    for clip, status in ((whole, 0), (tmp_path / "cut.webm", 1)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            assert main(["video", str(clip), "--model", str(model), "--json", str(tmp_path / "v.jsonl"),
                         "--out", str(tmp_path / "v.mp4")]) == status
        times = [f["time"] for f in read_jsonl(tmp_path / "v.jsonl")]
        if status == 0:
            assert len(times) == 30
            assert np.allclose(np.diff(times), [(0.033, 0.1)[i % 2] for i in range(29)], atol=0.0015)
            # the annotated video keeps the file's time at its 30 fps: frames repeated over the gaps
            count, fps = video_info(tmp_path / "v.mp4")[:2]
            assert fps == 30 and abs(count - (round(times[-1] * 30) + 1)) <= 1  # (58 frames' time)
        else:
            assert 0 < len(times) < 30
    assert f"movenet: error: {tmp_path / 'cut.webm'}: {len(times)} frames of the 58 the file declares" \
        in capsys.readouterr().err


def test_a_video_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    from movenet.errors import MoveNetError
    from movenet.video import open_source

    clip = tmp_path / "locked.mp4"
    clip.write_bytes(b"x")

    def refused(path, mode="r"):  # (as for a file without read permission; root would read it anyway)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("movenet.video.open", refused, raising=False)
    with pytest.raises(MoveNetError, match=f"{clip}: cannot read \\(Permission denied\\)"):
        open_source(str(clip))


def test_a_damaged_video_keeps_the_frames_read_and_exits_non_zero(tmp_path, capsys):
    """A file cut in half: its first frames are predicted and written, then a warning and an
    error line, exit status 1 (as eval with unreadable images); the whole file exits 0."""
    from movenet.checkpoint import save_checkpoint
    from movenet.errors import DataWarning
    from movenet.model import create_model

    model = tmp_path / "tiny.pt"
    save_checkpoint(model, create_model("mobilenetv2_050", input_size=64))
    writer = cv2.VideoWriter(str(tmp_path / "whole.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(cv2.circle(np.full((48, 64, 3), 4 * i, np.uint8), (10 + i, 24), 5, (0, 0, 255), -1))
    writer.release()
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    for name, status in (("whole", 0), ("cut", 1)):
        args = ["video", str(tmp_path / f"{name}.avi"), "--model", str(model), "--out", str(tmp_path / f"{name}.mp4"),
                "--json", str(tmp_path / f"{name}.jsonl")]
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)  # (one line: the error below)
            assert main(args) == status
        frames = len(read_jsonl(tmp_path / f"{name}.jsonl"))
        assert (frames == 40) == (status == 0) and frames > 0 and video_info(tmp_path / f"{name}.mp4")[0] == frames
    assert f"movenet: error: {tmp_path / 'cut.avi'}: {frames} frames of the 40 the file declares could be read " \
        "(damaged or cut short?); the outputs hold those" in capsys.readouterr().err


def test_a_video_missing_more_than_2_percent_of_its_frames_is_warned_about():
    from types import SimpleNamespace

    from movenet.errors import DataWarning
    from movenet.video import _check_length

    cut = SimpleNamespace(name="clip.mp4", is_camera=False, is_stream=False, frame_count=140, fps=25.0, time=129 / 25)
    with pytest.warns(DataWarning, match=r"clip.mp4: 130 of the 140 frames the file declares could be read"):
        assert "130 of the 140" in _check_length(cut, 130)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _check_length(cut, 138) is None  # within 2 %
