"""Image reading (formats, bad files) and the pad/resize/map-back geometry."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from movenet.datasets import _image_size
from movenet.errors import MoveNetError
from movenet.image import crop_and_resize, letterbox, list_images, read_image, size_mismatch, to_image_coords


def _write(path, img):
    assert cv2.imwrite(str(path), img)
    return path


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "bgr"])
def test_read_image_formats(tmp_path, kind):
    rng = np.random.default_rng(0)
    img = {
        "gray": rng.integers(0, 255, (30, 40), dtype=np.uint8),
        "rgba": rng.integers(0, 255, (30, 40, 4), dtype=np.uint8),
        "16bit": rng.integers(0, 65535, (30, 40, 3), dtype=np.uint16),
        "bgr": rng.integers(0, 255, (30, 40, 3), dtype=np.uint8),
    }[kind]
    out = read_image(_write(tmp_path / f"{kind}.png", img))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    if kind == "bgr":
        np.testing.assert_array_equal(out, img[:, :, ::-1])
    if kind == "rgba":  # alpha dropped
        np.testing.assert_array_equal(out, img[:, :, 2::-1])
    if kind == "16bit":
        np.testing.assert_allclose(out.astype(int), (img[:, :, ::-1] / 257).round(), atol=1)


@pytest.mark.parametrize("orientation,turn", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_read_image_applies_the_exif_orientation(tmp_path, orientation, turn):
    """A phone stores a portrait photo as landscape pixels plus an EXIF orientation tag: it is
    read upright, as viewers and labelling tools show it (``turn``: quarter turns, counter-clockwise)."""
    image = pytest.importorskip("PIL.Image")
    raw = np.zeros((40, 60, 3), np.uint8)
    raw[:20, :30] = (255, 0, 0)  # a red block in the top-left corner of the stored pixels
    stored = image.fromarray(raw)
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "phone.jpg")
    expected = np.rot90(raw, turn)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).mean() < 3
    assert _image_size(tmp_path / "phone.jpg") == (out.shape[1], out.shape[0])  # what converters write


def test_size_mismatch_names_the_file_and_the_likely_cause():
    img = np.zeros((30, 40, 3), np.uint8)
    assert size_mismatch("a.jpg", img.shape, 40, 30) is None
    assert size_mismatch("a.jpg", img.shape, 0, 0) is None  # size not given
    turned = size_mismatch("a.jpg", img.shape, 30, 40)
    assert turned.startswith("a.jpg: the image is 40x30, its annotation says 30x40") and "EXIF" in turned
    assert "resized" in size_mismatch("a.jpg", img.shape, 80, 60)


def test_read_image_bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name, problem in [("missing.jpg", "not found"), ("empty.jpg", "empty"), ("text.jpg", "not a readable image")]:
        with pytest.raises(MoveNetError, match=problem) as e:
            read_image(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_a_heic_photo_says_so_and_gif_and_avif_are_read(tmp_path):
    """An iPhone's HEIC photo is named as such, with the way out; GIF and AVIF, which OpenCV reads,
    are listed in folders as other images are."""
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200))
    with pytest.raises(MoveNetError, match=r"IMG_0001.HEIC: not a readable image \(a HEIC image, which OpenCV "
                                           r"does not read: convert it to JPEG or PNG\)$"):
        read_image(heic)
    clip = tmp_path / "clip.mp4"  # (what `movenet predict clip.mp4` meets)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(MoveNetError, match=r"clip.mp4: not a readable image \(a video: `movenet video` reads videos\)"):
        read_image(clip)
    clip.unlink()
    (tmp_path / "broken.avif").write_bytes(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + bytes(200))
    with pytest.raises(MoveNetError, match=r"broken.avif: not a readable image \(corrupt or unsupported format\)"):
        read_image(tmp_path / "broken.avif")
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:12, 8:20] = (255, 0, 0)
    for ext in (".gif", ".avif"):
        if cv2.haveImageWriter(f"x{ext}"):
            assert cv2.imwrite(str(tmp_path / f"a{ext}"), img)
            assert read_image(tmp_path / f"a{ext}").shape == (24, 32, 3)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    for name in ("a.jfif", "b.JPE"):  # (what browsers on Windows save photos as)
        (tmp_path / name).write_bytes(jpeg)
        assert read_image(tmp_path / name).shape == (24, 32, 3)
    listed = [os.path.basename(p) for p in list_images([str(tmp_path)])]  # (HEIC is not listed: passed over)
    assert listed == sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".HEIC")


@pytest.mark.parametrize("h,w", [(100, 60), (60, 100), (64, 64), (1000, 3000)])
def test_letterbox_and_map_back(h, w):
    img = np.zeros((h, w, 3), np.uint8)
    px, py = int(w * 0.7), int(h * 0.3)
    img[py, px] = 255
    square, side = letterbox(img, 192)
    assert square.shape == (192, 192, 3) and side == max(h, w)
    # a point at the pixel centre maps back to itself
    x_in, y_in = (px + 0.5) / side, (py + 0.5) / side
    back = to_image_coords(np.array([[x_in, y_in, 1.0]]), (0, 0, side, side))
    np.testing.assert_allclose(back[0, :2], [px + 0.5, py + 0.5], atol=1e-3)
    # padding is at the bottom/right only
    assert square[: int(192 * h / side) - 2, : int(192 * w / side) - 2].shape[0] > 0
    if h < w:
        assert square[int(192 * h / side) + 2:].max() == 0


def test_crop_and_resize_round_trip():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    box = (50.0, 20.0, 120.0, 120.0)
    crop = crop_and_resize(img, box, 120)  # scale 1: exact copy of the region
    np.testing.assert_array_equal(crop, img[20:140, 50:170])
    # cropping the padded square (past the image) is the whole-image letterbox
    wide = rng.integers(0, 255, (150, 400, 3), dtype=np.uint8)
    square, side = letterbox(wide, 192)
    via_crop = crop_and_resize(wide, (0, 0, side, side), 192)
    assert np.abs(via_crop.astype(int) - square).max() <= 1
    kp = np.array([[0.25, 0.5, 0.9]])
    np.testing.assert_allclose(to_image_coords(kp, box)[0], [80, 80, 0.9])


def test_list_images(tmp_path):
    for n in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.split("/")[-1] for p in list_images([str(tmp_path)])] == ["a.png", "b.jpg"]
    assert list_images([str(tmp_path / "*.jpg")]) == [str(tmp_path / "b.jpg")]
    assert list_images(["nope*.jpg"]) == ["nope*.jpg"]
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "d.jpg").write_bytes(b"x")
    assert [p.split("/")[-1] for p in list_images([str(tmp_path / "**" / "*")])] == ["a.png", "b.jpg", "d.jpg"]
    (tmp_path / "album.jpg").mkdir()  # a folder named like an image is not one
    assert [p.split("/")[-1] for p in list_images([str(tmp_path)])] == ["a.png", "b.jpg"]
    assert list_images([str(tmp_path / "*.jpg")]) == [str(tmp_path / "b.jpg")]


# ---------------------------------------------------------------- edges found by mutation testing
def test_non_square_box_maps_a_point_back_to_itself():
    img = np.zeros((200, 300, 3), np.uint8)
    img[119, 139] = 255  # pixel centre (139.5, 119.5)
    box = (100.0, 40.0, 80.0, 160.0)  # w != h
    crop = crop_and_resize(img, box, 64)
    cy, cx = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    back = to_image_coords(np.array([[(cx + 0.5) / 64, (cy + 0.5) / 64, 1.0]]), box)[0]
    assert abs(back[0] - 139.5) <= 80 / 64 and abs(back[1] - 119.5) <= 160 / 64
    np.testing.assert_allclose(to_image_coords(np.array([[0.5, 0.5, 1.0]]), (10, 20, 100, 50))[0], [60, 45, 1])


def test_to_rgb8_rounds_16_bit_and_swaps_bgra():
    from movenet.image import to_rgb8
    assert to_rgb8(np.full((1, 1), 2770, np.uint16))[0, 0, 0] == 11  # 2770 / 257 = 10.78
    assert to_rgb8(np.array([[[255, 0, 0, 255]]], np.uint8))[0, 0].tolist() == [0, 0, 255]
    # float images: 0..1 as a rule, 0..255 as some tools write them (a float TIFF)
    assert to_rgb8(np.array([[[0.2, 0.5, 1.0]]], np.float32))[0, 0].tolist() == [255, 128, 51]
    assert to_rgb8(np.array([[[51.0, 128.0, 255.0]]], np.float32))[0, 0].tolist() == [255, 128, 51]


def test_a_png_cut_short_is_one_line_and_trailing_bytes_are_harmless(tmp_path, capfd):
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "full.png"), img)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    (tmp_path / "tail.png").write_bytes(data + b"\x00" * 100)  # bytes after IEND: libpng ignores them
    capfd.readouterr()
    with pytest.raises(MoveNetError, match=r"cut.png: not a readable image \(a PNG cut short: no IEND chunk\)"):
        read_image(tmp_path / "cut.png")
    assert capfd.readouterr().err == ""  # (libpng's own line stayed out)
    np.testing.assert_array_equal(read_image(tmp_path / "tail.png"), img[:, :, ::-1])


def test_a_png_with_a_damaged_image_chunk_is_one_line(tmp_path, capfd):
    import struct
    import zlib
    img = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", img)[1].tobytes())
    idat = data.find(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 10] ^= 0x01  # one bit of the pixel data, its CRC unchanged
    (tmp_path / "flip.png").write_bytes(flipped)
    capfd.readouterr()
    with pytest.raises(MoveNetError, match=r"flip.png: not a readable image \(a damaged PNG: CRC error in its IDAT chunk\)"):
        read_image(tmp_path / "flip.png")
    assert capfd.readouterr().err == ""
    # A damaged text chunk does not stop the image (libpng skips it); a good one changes nothing.
    body = b"Comment\x00hello"
    for crc, name in ((zlib.crc32(b"tEXt" + body), "text.png"), (zlib.crc32(b"tEXt" + body) ^ 1, "badtext.png")):
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", crc)
        (tmp_path / name).write_bytes(bytes(data[:33]) + chunk + bytes(data[33:]))
        np.testing.assert_array_equal(read_image(tmp_path / name), img[:, :, ::-1])


def test_an_empty_file_and_a_folder_are_named_as_such(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    for path, problem in [(tmp_path / "e.jpg", "empty file"), (tmp_path, "is a directory")]:
        with pytest.raises(MoveNetError) as e:
            read_image(path)
        assert str(e.value) == f"{path}: {problem}"


def test_a_video_named_in_capitals_is_still_told_apart_and_an_avif_is_not_a_heic(tmp_path):
    clip = tmp_path / "IMG_0001.MOV"  # (as an iPhone names its videos)
    clip.write_bytes(b"\0\0\0\x14ftypqt  \0\0\0\0qt  " + bytes(200))
    with pytest.raises(MoveNetError, match=r"IMG_0001.MOV: not a readable image \(a video: `movenet video` reads videos\)$"):
        read_image(clip)
    avif = tmp_path / "x.avif"  # an AVIF whose major brand is HEIF's general mif1
    avif.write_bytes(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf" + bytes(200))
    with pytest.raises(MoveNetError, match=r"x.avif: not a readable image \(corrupt or unsupported format\)$"):
        read_image(avif)


def test_size_mismatch_is_silent_where_either_side_is_not_given():
    assert size_mismatch("a.jpg", (30, 40, 3), 80, 0) is None
    assert size_mismatch("a.jpg", (30, 40, 3), 0, 60) is None
    assert "80x60" in size_mismatch("a.jpg", (30, 40, 3), 80, 60)


def test_to_rgb8_stretches_other_integer_depths_and_takes_one_channel_images():
    from movenet.image import to_rgb8

    out = to_rgb8(np.array([[-1000, 0, 1000]], np.int32))  # (a 32-bit TIFF, say)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 128, 255] and (out == out[..., :1]).all()
    grey = np.array([[[7], [200]]], np.uint8)
    np.testing.assert_array_equal(to_rgb8(grey), np.repeat(grey, 3, axis=2))


def test_to_image_coords_leaves_the_callers_keypoints_alone():
    kp = np.array([[0.5, 0.25, 0.9]], np.float32)
    out = to_image_coords(kp, (10, 20, 100, 40))
    np.testing.assert_allclose(out[0], [60, 30, 0.9])
    np.testing.assert_array_equal(kp, np.array([[0.5, 0.25, 0.9]], np.float32))


def test_list_images_takes_capital_extensions_odd_names_and_each_file_once(tmp_path):
    for n in ("IMG_0001.JPG", "a[1].jpg", "a1.jpg"):
        (tmp_path / n).write_bytes(b"x")
    assert [os.path.basename(p) for p in list_images([str(tmp_path)])] == ["IMG_0001.JPG", "a1.jpg", "a[1].jpg"]
    assert list_images([str(tmp_path / "*.JPG")]) == [str(tmp_path / "IMG_0001.JPG")]
    assert list_images([str(tmp_path / "a[1].jpg")]) == [str(tmp_path / "a[1].jpg")]  # a file, not a pattern
    (tmp_path / "link.jpg").symlink_to(tmp_path / "a1.jpg")
    assert list_images([str(tmp_path / "a1.jpg"), str(tmp_path / "link.jpg")]) == [str(tmp_path / "a1.jpg")]
