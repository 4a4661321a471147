"""Image reading and the whole-image preprocessing: pad to a square at the bottom/right,
resize, and map keypoints back to the original pixels. numpy + opencv only."""
from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

import cv2
import numpy as np

from .errors import MoveNetError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".gif", ".avif"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any image as RGB uint8 HxWx3 (grayscale, RGBA and 16-bit are converted), turned
    upright by its EXIF orientation."""
    if not isinstance(path, (str, os.PathLike)):
        raise MoveNetError(f"read_image takes a file path, got a {type(path).__name__}")
    path = Path(path)
    try:  # (a file in a folder that cannot be searched fails in exists())
        if not path.exists():
            raise MoveNetError(f"{path}: file not found")
        if path.is_dir():
            raise MoveNetError(f"{path}: is a directory")
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise MoveNetError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise MoveNetError(f"{path}: empty file")
    damage = _png_damage(data)  # (libpng would print a line of its own before failing)
    if damage:
        raise MoveNetError(f"{path}: not a readable image ({damage})")
    # ANYDEPTH | ANYCOLOR: 16-bit and grey kept, alpha dropped, and the EXIF orientation applied
    # (a phone photo comes upright, as viewers and labelling tools show it); UNCHANGED ignores it.
    why = "corrupt or unsupported format"
    try:
        with quiet_opencv():  # (its log lines for a damaged TIFF or BMP header: ours instead)
            img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as e:  # OpenCV asserts rather than returning None for some headers
        img = None
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):
            why = "too large: over OpenCV's limit of 2^30 pixels"
    if img is None or img.size == 0:
        unread = _unread_format(data)
        if unread:
            why = f"a {unread} image, which OpenCV does not read: convert it to JPEG or PNG"
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            why = "a video: `movenet video` reads videos"
        raise MoveNetError(f"{path}: not a readable image ({why})")
    return to_rgb8(img)


def _unread_format(data: np.ndarray) -> str | None:
    """The format's name for a HEIC/HEIF photo (iPhones' own format), which OpenCV has no decoder
    for, told by the file's first bytes (an ISO media file whose brands are HEIF's, not AVIF's);
    else None."""
    head = bytes(data[:48])
    heif = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
    if head[4:8] == b"ftyp" and head[8:12] in heif and b"avif" not in head:
        return "HEIC"
    return None


@contextlib.contextmanager
def quiet_opencv():
    """OpenCV's own log lines off (they would come before our one-line error)."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_damage(data: np.ndarray) -> str | None:
    """What is wrong with a PNG file's chunk structure, or None (also for other formats): cut short
    before its IEND chunk (a copy or download that stopped early), or an image chunk whose CRC does
    not match (bytes changed on the way). Ancillary chunks (text, colour profiles) are left to
    libpng, which warns and skips a damaged one; bytes after IEND are ignored, as libpng ignores them."""
    raw = memoryview(data).cast("B")  # (no copy: a photo's PNG is megabytes)
    if bytes(raw[:8]) != PNG_SIGNATURE:
        return None
    pos = 8
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        kind = bytes(raw[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(raw):
            break
        critical = kind[:1].isupper()
        if critical and zlib.crc32(raw[pos + 4:end - 4]) != int.from_bytes(raw[end - 4:end], "big"):
            return f"a damaged PNG: CRC error in its {kind.decode('latin-1')} chunk"
        if kind == b"IEND":
            return None
        pos = end
    return "a PNG cut short: no IEND chunk"


def size_mismatch(path: str | os.PathLike, shape: tuple[int, ...], width: int, height: int) -> str | None:
    """The problem when an image of ``shape`` (height, width, ...) is not ``width`` x ``height``
    (the size its annotation file gives; 0 = not given), else None: its keypoints are then
    likely misplaced."""
    h, w = shape[:2]
    if width <= 0 or height <= 0 or (w, h) == (width, height):
        return None
    why = ("turned a quarter: labelled on the stored pixels of a photo with an EXIF orientation? "
           "images are read upright, as viewers show them" if (w, h) == (height, width)
           else "resized after labelling, or another image of that name?")
    return f"{path}: the image is {w}x{h}, its annotation says {width}x{height} ({why})"


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """OpenCV BGR/BGRA/gray of any depth -> RGB uint8."""
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):  # 0..1 as a rule; some tools write 0..255 floats
        img = np.nan_to_num(img)  # (0..1 may overshoot a little: resampling, highlights)
        scale = 1.0 if img.size and float(np.percentile(img, 99)) > 1.5 else 255.0
        img = np.clip(img * scale + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_rgb_image(img) -> None:
    """A model input must be what ``read_image`` gives: RGB uint8 HxWx3, not empty. Anything else
    (float 0..1, grey, RGBA, CHW, a path) would run and give wrong keypoints, or fail deep inside."""
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 \
            and img.shape[0] > 0 and img.shape[1] > 0:
        return
    got = (f"a {img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray)
           else f"a {type(img).__name__}")
    raise MoveNetError(f"expected an RGB uint8 H x W x 3 image (as movenet.image.read_image gives), got {got}")


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Pad to a square (black, bottom/right) and resize bilinearly to ``size``.
    Returns the square image and the side of the padded square in original pixels."""
    h, w = img.shape[:2]
    side = max(h, w)
    if h != w:
        img = cv2.copyMakeBorder(img, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=0)
    if side != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return img, float(side)


def crop_and_resize(img: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop a square region ``box`` = (x0, y0, side_x, side_y) in pixels (may leave the image,
    padded with black) and resize to ``size`` with one affine warp."""
    x0, y0, sw, sh = box
    sx, sy = size / sw, size / sh
    # Pixel centres map to pixel centres, as in cv2.resize: cropping the padded square gives
    # exactly what ``letterbox`` gives.
    m = np.array([[sx, 0, -x0 * sx + 0.5 * sx - 0.5], [0, sy, -y0 * sy + 0.5 * sy - 0.5]], np.float32)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_image_coords(keypoints: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Map (x, y, score) normalised to a crop ``box`` = (x0, y0, w, h) back to image pixels."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    out[..., 0] = box[0] + out[..., 0] * box[2]
    out[..., 1] = box[1] + out[..., 1] * box[3]
    return out


def _image_file(path: Path) -> bool:
    """Named as an image and not a folder (``album.jpg/``): what folders and globs list."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir()


def list_images(sources: list[str]) -> list[str]:
    """Expand files, directories (sorted, non-recursive) and glob patterns (``**`` at any depth;
    images only, as in folders); keep given order, each file once. Names that match nothing are
    returned as-is so the caller reports them."""
    import glob

    out: list[str] = []
    for src in sources:
        p = Path(src)
        try:
            is_dir = p.is_dir()
        except OSError:  # in a folder that cannot be read: reading the file says why
            is_dir = False
        if is_dir:
            try:
                out += sorted(str(f) for f in p.iterdir() if _image_file(f))
            except OSError as e:
                raise MoveNetError(f"{p}: cannot list the folder ({e.strerror or e})") from None
        elif any(ch in src for ch in "*?[") and not p.exists():
            matches = sorted(m for m in glob.glob(src, recursive=True) if _image_file(Path(m)))
            out += matches if matches else [src]
        else:
            out.append(src)
    seen: set[str] = set()
    unique = []
    for name in out:
        key = os.path.realpath(name)
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return unique
