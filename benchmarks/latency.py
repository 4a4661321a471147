"""Latency of Lightning in every backend, measured interleaved in one run: our ONNX export
(fp32, the reference of the ratios), our int8 model, Google's ONNX graph and Google's int8
TFLite (when ../shared/reference has them), and PyTorch eager.

    python benchmarks/latency.py [--runs 300] [--threads 2] [--json out.json] [--processes 5]

``--processes N`` repeats the whole interleaved run in N fresh processes (onnxruntime's speed
can differ from process to process) and ends with each model's median over the processes and
in how many processes the first row was at least as fast as it.

The int8 model is quantized once (calibrated on LSP images 1-300 from ../shared/data/lsp)
and cached beside the fp32 export in ``movenet weights where``/onnx.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from movenet.benchmark import format_table, report_dict, run_benchmark
from movenet.errors import script_main
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


def repeat_in_processes(args: argparse.Namespace) -> int:
    argv = [sys.executable, __file__, "--runs", str(args.runs), "--warmup", str(args.warmup),
            "--threads", str(args.threads), "--block", str(args.block)] + (["--no-torch"] if args.no_torch else []) \
        + (["--image", args.image] if args.image else [])
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            out = Path(tmp) / f"{i}.json"
            subprocess.run(argv + ["--json", str(out)], check=True)
            reports.append(json.loads(out.read_text()))
    labels = [m["label"] for m in reports[0]["models"]]
    print(f"\n{args.processes} processes; per model: median over processes of the per-process median "
          "(ms), and in how many processes the first row was at least as fast")
    print("| model | model-only ms | first ≤ it | end-to-end ms | first ≤ it |")
    print("|---|---:|---:|---:|---:|")
    for j, label in enumerate(labels):
        cells = []
        for key in ("model_ms", "end_to_end_ms"):
            ms = [r["models"][j][key]["median"] for r in reports]
            first = [r["models"][0][key]["median"] for r in reports]
            wins = sum(f <= m for m, f in zip(ms, first))
            cells += [f"{float(np.median(ms)):.2f}", f"{wins}/{len(ms)}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json_out:
        write_json_atomic(args.json_out, {"processes": reports})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", default=None, help="default: the built-in photo")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch eager out")
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--processes", type=int, default=1, help="repeat in N fresh processes")
    parser.add_argument("--block", type=int, default=1,
                        help="runs of one model in a row per round, the first not counted (default 1)")
    args = parser.parse_args()
    if args.processes > 1:
        return repeat_in_processes(args)

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
    timings, settings = run_benchmark(entries, "lightning", args.threads, args.runs, args.warmup, args.image,
                                      args.block)
    print(f"{settings['cpu']} ({settings['cores']} cores), {args.threads} threads, "
          f"{args.runs} interleaved runs per model (blocks of {args.block}); ratios are to the first row")
    print(format_table(timings))
    if args.json_out:
        write_json_atomic(args.json_out, report_dict(timings, settings))
    return 0


if __name__ == "__main__":
    script_main(main)
