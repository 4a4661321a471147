"""Latency of Lightning in every backend, measured interleaved in one run: our ONNX export
(fp32, the reference of the ratios), our int8 model, Google's ONNX graph and Google's int8
TFLite (when ../shared/reference has them), and PyTorch eager.

    python benchmarks/latency.py [--runs 300] [--threads 2] [--json out.json]

The int8 model is quantized once (calibrated on LSP images 1-300 from ../shared/data/lsp)
and cached beside the fp32 export in ``movenet weights where``/onnx.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

from movenet.benchmark import format_table, report_dict, run_benchmark
from movenet.export import export_onnx_cached
from movenet.fileio import write_json_atomic
from movenet.quantize import DEFAULT_CONFIG, calibration_images, quantize_onnx

SHARED = Path(__file__).resolve().parents[2] / "shared"
CALIBRATION_IMAGES = 300


def int8_model(fp32: Path, lsp: Path) -> Path | None:
    if not (lsp / "images").is_dir():
        return None
    key = hashlib.sha256(json.dumps(asdict(DEFAULT_CONFIG), sort_keys=True).encode()).hexdigest()[:12]
    out = fp32.with_name(f"{fp32.stem}-int8-{key}.onnx")
    if not out.exists():
        quantize_onnx(fp32, out, calibration_images([str(lsp)], CALIBRATION_IMAGES), DEFAULT_CONFIG)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", default=None, help="default: the built-in photo")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch eager out")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    fp32 = export_onnx_cached("lightning")
    entries = ["onnx"]
    int8 = int8_model(fp32, SHARED / "data" / "lsp")
    if int8:
        entries.append(str(int8))
    google = SHARED / "reference" / "movenet_lightning.onnx"
    if google.exists():
        entries.append(str(google))
    tflite = SHARED / "reference" / "movenet_lightning_int8.tflite"
    if tflite.exists() and importlib.util.find_spec("ai_edge_litert"):
        entries.append(str(tflite))
    if not args.no_torch:
        entries.append("torch")
    timings, settings = run_benchmark(entries, "lightning", args.threads, args.runs, args.warmup, args.image)
    print(f"{settings['cpu']} ({settings['cores']} cores), {args.threads} threads, "
          f"{args.runs} interleaved rounds; ratios are to the first row")
    print(format_table(timings))
    if args.json_out:
        write_json_atomic(args.json_out, report_dict(timings, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
