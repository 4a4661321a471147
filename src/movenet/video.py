"""Pose on every frame of a video file, camera or network stream: an annotated video and/or one
JSON line per frame, written atomically (complete or absent). Used by ``movenet video``."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .draw import draw_pose
from .errors import DataWarning, MoveNetError
from .fileio import atomic_path, open_text_output, refuse_stream
from .runtime import Predictor, pose_score
from .tracking import SMOOTHING_PRESETS, MultiPoseTracker, PoseTracker, tracker_schema

DEFAULT_CAMERA_FPS = 30.0  # when a camera does not report its frame rate
STREAM_TIMEOUT_MS = 10000  # a network stream that opens or sends nothing for this long is an error
INTERLACED = "interlaced"  # in FFmpeg's error when it cannot convert such frames (OpenCV 5's wheels)
NEEDS_A_FILE = "an mp4 is written with its index last"  # why --out cannot be a device or pipe


def person_record(keypoints: np.ndarray, score: float, track_id: int | None = None) -> dict:
    """One person as in ``movenet predict --json``: pixel (x, y, score) per keypoint, a pose
    score and, when tracked, an ``id``."""
    rec = {"keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in keypoints],
           "score": round(float(score), 4)}
    if track_id is not None:
        rec["id"] = int(track_id)
    return rec


@dataclass
class VideoSource:
    capture: cv2.VideoCapture
    name: str
    is_camera: bool
    fps: float
    width: int
    height: int
    frame_count: int | None  # None for cameras (and files that do not say)
    first_frame: np.ndarray | None  # read by open_source to reject empty videos early (BGR)
    time: float | None = None  # a file's or stream's time of the frame read last, in seconds
    is_stream: bool = False  # a network stream (rtsp://, http://...): live, as a camera
    # FFmpeg's lines of each read kept off the terminal (run_video's muffle_reads); a library's
    # caller may want them, and other threads' stderr is held while reading
    muffled: Muffled | None = None

    @property
    def wall_clock(self) -> bool:
        """Timed by the clock as frames come: a camera, or a live stream (one of no known length:
        an IP camera's MJPEG over HTTP carries no timestamps, and FFmpeg makes up 25 fps ones)."""
        return self.is_camera or (self.is_stream and not self.frame_count)

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None at the end; for a file, ``time`` is then that frame's time."""
        if self.first_frame is not None:  # (the capture is still at it)
            frame, self.first_frame = self.first_frame, None
        else:
            with self.muffled or contextlib.nullcontext():
                ok, frame = self.capture.read()
            if self.muffled is not None:
                self.muffled.said()  # (a damaged packet's lines: the run's outcome says what matters)
            if not ok:
                return None
        if not self.is_camera:
            self.time = frame_time(self.capture, self.time, self.fps)
        return frame


def frame_time(capture, previous: float | None, fps: float) -> float:
    """The time of the frame just read from a file, in seconds: the file's own timestamp (a
    variable frame rate file's frames are not 1/fps apart), else one frame after ``previous``."""
    step = 0.0 if previous is None else previous + 1 / fps
    try:
        ms = float(capture.get(cv2.CAP_PROP_POS_MSEC))
    except (AttributeError, TypeError, ValueError, cv2.error):
        return step
    if not np.isfinite(ms) or ms < 0 or (previous is not None and ms / 1000 <= previous):
        return step
    return ms / 1000


def fourcc(capture: cv2.VideoCapture) -> str | None:
    """The four-letter code of a capture's video codec (avc1, AV01...), None when it has none."""
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    text = code.to_bytes(4, "little").decode("ascii", "replace") if 0 < code < 2 ** 32 else ""
    return text.strip() if text.strip() and text.isprintable() else None


def is_camera_index(source: str) -> bool:
    """A camera index ("0", "1"...), unless a file has that name."""
    return str(source).isdigit() and not Path(source).exists()


def is_stream_url(source: str) -> bool:
    """A network stream's URL (rtsp://, http(s)://, rtmp://, udp://...): an IP camera, say."""
    return (re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(source)) is not None
            and not str(source).lower().startswith("file://"))


def shown_url(url: str) -> str:
    """A URL as messages show it: a password in it as *** (rtsp://user:pass@host, up to the
    last @ before the path, as FFmpeg reads it; or a query's pwd=, password=, pass=, key=...)."""
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/]*@", r"\1:***@", url)
    return re.sub(r"([?&](?:pwd|pass|passwd|password|key|token|auth|secret)=)[^&#]*", r"\1***", url,
                  flags=re.IGNORECASE)


def source_stem(source: str) -> str:
    """A file name stem for a source's outputs: the file's, camera0, or a stream's last path part
    (its host where the path has none)."""
    if is_camera_index(source):
        return f"camera{source}"
    if is_stream_url(source):
        from urllib.parse import urlsplit

        parts = urlsplit(source)
        stem = Path(parts.path).stem or (parts.hostname or "stream")
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
    return Path(source).stem


def open_source(source: str) -> VideoSource:
    """A video file, a camera given by its index ("0", "1"...) or a network stream's URL."""
    is_camera = is_camera_index(source)
    if is_stream_url(source):
        return _open_stream(str(source))
    name = f"camera {source}" if is_camera else str(source)
    if not is_camera:
        path = Path(source)
        if not path.exists():
            raise MoveNetError(f"{source}: file not found")
        if path.is_dir():
            raise MoveNetError(f"{source}: is a directory")
        try:
            with open(path, "rb"):  # (OpenCV says only that it could not open it)
                pass
        except OSError as e:
            raise MoveNetError(f"{source}: cannot read ({e.strerror})") from None
    try:
        muffled = Muffled()
        with muffled:  # (OpenCV's and FFmpeg's lines: our one-line error instead)
            cap = cv2.VideoCapture(int(source)) if is_camera else cv2.VideoCapture(str(source))
            ok, first = cap.read() if cap.isOpened() else (False, None)
    except cv2.error:  # (a camera index beyond C's int)
        raise MoveNetError(f"{name}: cannot be opened") from None
    if not cap.isOpened():
        raise MoveNetError(f"{name}: cannot be opened" if is_camera
                           else f"{source}: not a readable video (corrupt or unsupported format)")
    if any(INTERLACED in line for line in muffled.said()):  # its frames come back blank or as stale memory
        cap.release()
        raise MoveNetError(f"{name}: an interlaced video (TV, DVD, a camcorder's 1080i), which OpenCV's FFmpeg "
                           "cannot convert (its frames come back blank); deinterlace it first: "
                           "ffmpeg -i IN -vf yadif -c:v libx264 OUT.mp4")
    if not ok or first is None or first.size == 0:
        codec = None if is_camera or cap.get(cv2.CAP_PROP_FRAME_COUNT) <= 0 else fourcc(cap)
        cap.release()
        if codec:  # frames there, none decoded: AV1, say, which OpenCV's own FFmpeg cannot decode
            raise MoveNetError(f"{name}: its {codec} frames cannot be decoded here (no decoder for them in "
                               "OpenCV's FFmpeg); convert the file, e.g. to H.264: ffmpeg -i IN -c:v libx264 OUT.mp4")
        raise MoveNetError(f"{name}: no frames could be read (empty or unreadable video)")
    return _source(cap, name, first, is_camera=is_camera)


def _open_stream(url: str) -> VideoSource:
    name = shown_url(url)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    muffled = Muffled()
    with muffled:  # (a refused connection: our line instead of FFmpeg's and OpenCV's)
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        ok, first = cap.read() if cap.isOpened() else (False, None)
    muffled.said()
    # RTSP over UDP (FFmpeg's default) is often blocked between a camera and its viewer
    hint = ("; if the camera is reachable, try RTSP over TCP: OPENCV_FFMPEG_CAPTURE_OPTIONS='rtsp_transport;tcp'"
            if url.lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ else "")
    if not cap.isOpened():
        raise MoveNetError(f"{name}: cannot be opened (unreachable, refused, or not a video stream){hint}")
    if not ok or first is None or first.size == 0:
        cap.release()
        raise MoveNetError(f"{name}: no frames came within {STREAM_TIMEOUT_MS // 1000} s{hint}")
    return _source(cap, name, first, is_stream=True, max_fps=1000)  # (a stream's guess can be its clock's rate)


def _source(cap: cv2.VideoCapture, name: str, first: np.ndarray, is_camera: bool = False, is_stream: bool = False,
            max_fps: float = float("inf")) -> VideoSource:
    """An opened capture whose first frame was read, with its frame rate (30 where it gives none
    that is usable) and frame count (None for a camera, and where it gives none)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= max_fps else DEFAULT_CAMERA_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not is_camera else 0
    return VideoSource(cap, name, is_camera, fps, first.shape[1], first.shape[0], count if count > 0 else None, first,
                       is_stream=is_stream)


class Muffled:
    """Keeps what OpenCV and its FFmpeg write to the process's stderr (their logs bypass Python's)
    from the terminal, where our one-line errors say it: ``with muffled: ...``; ``said()`` gives
    and forgets the lines caught. One file serves every ``with``: a frame's read costs two dup2.
    (OpenCV's silent log level would also silence FFmpeg's errors, which tell an interlaced video.)"""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.saved: int | None = None

    def __enter__(self):
        try:
            self.saved = os.dup(2)
        except OSError:  # (no stderr to take)
            self.saved = None
            return self
        if sys.stderr is not None:  # (None under pythonw or with stderr closed)
            sys.stderr.flush()
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = None

    def said(self) -> list[str]:
        if self.file.tell() == 0:  # (nothing written: the common case, at every frame's read)
            return []
        self.file.seek(0)
        lines = self.file.read().decode("utf-8", "replace").splitlines()
        self.file.seek(0)
        self.file.truncate()
        return lines


def draw_ids(img: np.ndarray, keypoints: np.ndarray, ids: np.ndarray, threshold: float) -> np.ndarray:
    """Write each person's id above its confident keypoints (in place; returns ``img``)."""
    scale = max(img.shape[:2]) / 800
    for kpts, tid in zip(keypoints, ids):
        good = kpts[:, 2] >= threshold
        if good.any():
            x, y = kpts[good, 0].min(), kpts[good, 1].min()
            cv2.putText(img, str(int(tid)), (int(x), max(int(y) - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        max(0.4, scale), (255, 255, 0), max(1, int(2 * scale)), cv2.LINE_AA)
    return img


def run_video(source: str | VideoSource, predictor: Predictor, out: str | None = None, json_out: str | None = None,
              multi: bool = False, smooth: bool = True, track: bool = True, threshold: float = 0.3,
              max_frames: int | None = None, max_people: int = 6, progress: bool = True,
              smoothing: str = "default", refine: bool = True, muffle_reads: bool = False) -> dict:
    """Predict every frame of ``source`` (file, camera index or ``open_source``) and write the annotated video
    ``out`` (mp4v, same fps, time and size: ``OutputClock``) and/or ``json_out`` (one JSON object per frame:
    ``{"frame", "time", "keypoint_names", "people": [{"keypoints", "score", "id"?}]}``). Outputs are written to
    temporary files renamed at the end; on an error or interrupt they are removed. For a
    camera or a network stream, Ctrl-C ends the capture and keeps what was recorded. ``smoothing`` names the One
    Euro parameters (``tracking.SMOOTHING_PRESETS``); ``refine``: the second look after a look
    at the whole frame (``tracking.PoseTracker``; with ``multi``, at each person candidate,
    ``tracking.predict_people``). ``muffle_reads``: FFmpeg's lines of each read (a damaged
    packet's) kept off the terminal, as the command line does (``Muffled``).
    Returns {"frames", "seconds", "fps", "cut_short", "ended"}: ``cut_short`` is the warning said
    when the file ended well before the frames it declares (the outputs hold the frames read),
    else None; ``ended``: the source gave no more frames (not Ctrl-C or ``max_frames``)."""
    from tqdm import tqdm

    if max_frames is not None and max_frames < 1:
        raise MoveNetError(f"--max-frames must be at least 1, got {max_frames}")
    if smoothing not in SMOOTHING_PRESETS:
        raise MoveNetError(f"unknown smoothing {smoothing!r}; choose from {', '.join(SMOOTHING_PRESETS)}")
    schema = tracker_schema(predictor, None, track)
    names = list(schema.keypoints)
    if out:
        refuse_stream(out, NEEDS_A_FILE)
    src = source if isinstance(source, VideoSource) else open_source(source)
    if muffle_reads and src.muffled is None:
        src.muffled = Muffled()
    params = SMOOTHING_PRESETS[smoothing]
    tracker = (MultiPoseTracker(predictor, track=track, smooth=smooth, refine=refine, max_people=max_people,
                                filter_params=params, schema=schema) if multi
               else PoseTracker(predictor, track=track, smooth=smooth, filter_params=params, refine=refine,
                                schema=schema))
    total = min(filter(None, [src.frame_count, max_frames]), default=None)
    frames, cut_short, ended = 0, None, False
    clock = OutputClock(src.fps)  # the annotated video's frames
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            writer = jsonl = None
            if json_out:  # (entered first, renamed last: after the video is checked)
                jsonl = open_text_output(stack.enter_context(atomic_path(json_out)))
                stack.enter_context(jsonl)
            if out:
                tmp = stack.enter_context(atomic_path(out))

                def check_written(exc_type, exc, tb) -> None:  # after release, before the rename
                    if exc_type is None:
                        _check_written(tmp, clock.written, out)

                stack.push(check_written)
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), src.fps,
                                         (src.width, src.height))
                stack.callback(writer.release)
                if not writer.isOpened():
                    raise MoveNetError(f"{out}: cannot write an mp4v video of {src.width}x{src.height} frames "
                                       "(--json alone writes the keypoints)" if min(src.width, src.height) < 2
                                       else f"{out}: cannot write an mp4v video here")
            label = Path(src.name.split("?")[0] if src.is_stream else src.name).name
            bar = stack.enter_context(tqdm(total=total, desc=label, unit="frame",
                                           file=sys.stderr, disable=not progress, smoothing=0.3))
            try:
                while max_frames is None or frames < max_frames:
                    bgr = src.read()
                    if bgr is None:
                        ended = True
                        cut_short = _check_length(src, frames)
                        if not cut_short and bar.total != frames:  # (a count that was an estimate)
                            bar.total = frames
                            bar.refresh()
                        break
                    if bgr.shape[:2] != (src.height, src.width):
                        raise MoveNetError(f"{src.name}: frame {frames} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                           f"the video says {src.width}x{src.height}")
                    timestamp = time.perf_counter() - start if src.wall_clock else src.time
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    kpts, people = _predict_frame(tracker, rgb, timestamp, multi)
                    if jsonl is not None:
                        jsonl.write(json.dumps({"frame": frames, "time": round(timestamp, 4),
                                                "keypoint_names": names, "people": people}) + "\n")
                    if writer is not None:
                        drawn = draw_pose(rgb, kpts, schema, threshold=threshold)
                        if multi:
                            draw_ids(drawn, kpts, [p["id"] for p in people], threshold)
                        bgr_drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                        for _ in range(clock.repeats(timestamp)):
                            writer.write(bgr_drawn)
                    frames += 1
                    bar.update(1)
            except KeyboardInterrupt:
                if not (src.is_camera or src.is_stream) or frames == 0:
                    raise
    finally:
        src.capture.release()
    seconds = time.perf_counter() - start
    if out and clock.shortened > 0:
        warnings.warn(f"{src.name}: gaps of {clock.shortened:.1f} s in all between its frames are shortened to "
                      f"{clock.max_gap / clock.fps:g} s each in {out}", DataWarning, stacklevel=2)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else 0.0,
            "cut_short": cut_short, "ended": ended}


class OutputClock:
    """How many times to write each frame into a video of ``fps`` so that it keeps the source's
    time: a variable frame rate file's or a live source's frame is repeated over a gap and left
    out where the video is over a frame ahead (at a constant frame rate, once each; a camera's
    jitter of under half a frame changes nothing). A gap of over ``max_gap_s`` (a camera that
    paused, a timestamp that jumps) is shortened to that, with ``shortened`` seconds counted."""

    def __init__(self, fps: float, max_gap_s: float = 2.0):
        self.fps, self.max_gap = fps, max_gap_s * fps
        self.start: float | None = None
        self.written = 0
        self.shortened = 0.0

    def repeats(self, time_s: float) -> int:
        if self.start is None:
            self.start = time_s
        behind = (time_s - self.start) * self.fps - self.written  # this frame's place after the video's end
        if behind > self.max_gap:
            self.start += (behind - self.max_gap) / self.fps
            self.shortened += (behind - self.max_gap) / self.fps
            behind = self.max_gap
        n = 0 if behind < -1 else 1 + int(round(behind)) if behind >= 1.5 else 1
        self.written += n
        return n


def _check_written(path: Path, frames: int, out) -> None:
    """OpenCV's writer reports no errors: a video cut short (a full disk) is found by reading it back."""
    with Muffled():
        cap = cv2.VideoCapture(str(path))
    try:
        readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if readable < frames:
        raise MoveNetError(f"{out}: cannot write ({readable} of the {frames} frames written can be read back; "
                           "is the disk full?)")


class CutShort(DataWarning):
    """A video file that ended well before the frames it declares."""


def _check_length(src: VideoSource, frames: int) -> str | None:
    """A file that ends well before the frame count its container declares, and before the time
    that count lasts, is damaged or cut short: say so (what could be read is kept) and return
    what was said. Counts are estimates in some containers, hence the margin; a variable frame
    rate file (WebM, MKV) can hold fewer frames than its duration times its frame rate, and
    then its last frame still reaches that duration."""
    declared = src.frame_count
    expected = declared - max(2, 0.02 * declared) if declared else 0
    reached = None if src.time is None else (src.time + 1 / src.fps) * src.fps  # (in frames of 1/fps)
    if not (src.is_camera or src.is_stream) and declared and frames < expected and (reached is None
                                                                                   or reached < expected):
        said = (f"{src.name}: {frames} of the {declared} frames the file declares could be read; it may be damaged "
                "or cut short")
        warnings.warn(said, CutShort, stacklevel=2)
        return said
    return None


def _predict_frame(tracker, rgb: np.ndarray, timestamp: float, multi: bool) -> tuple[np.ndarray, list[dict]]:
    if multi:
        kpts, scores, ids = tracker(rgb, timestamp)
        return kpts, [person_record(k, s, i) for k, s, i in zip(kpts, scores, ids)]
    kpts = tracker(rgb, timestamp)
    return kpts, [person_record(kpts, pose_score(kpts))]
