"""Speed of the numpy decoding alone (``decode.decode_single``) on Lightning's real 48x48x17
output for the built-in photo, next to the model run it follows (measured in the same run).

    python benchmarks/decode_speed.py [--runs 5000]

Budget: median <= 0.2 ms.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from movenet.decode import decode_single
from movenet.errors import script_main
from movenet.export import BUILTIN_IMAGE, export_onnx_cached
from movenet.image import read_image
from movenet.runtime import OnnxPredictor

BUDGET_MS = 0.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    predictor = OnnxPredictor(str(export_onnx_cached("lightning")), threads=args.threads)
    batch, _ = predictor.preprocess(read_image(BUILTIN_IMAGE))
    outputs = predictor.run(batch)
    heat, center, reg, off = (o[0] for o in outputs)
    decode_args = (heat, center, reg, off, predictor.prior, predictor.distance_offset, predictor.coord_scale)
    decode_ms, model_ms = [], []
    for i in range(args.runs + 100):
        start = time.perf_counter()
        decode_single(*decode_args)
        mid = time.perf_counter()
        if i % 10 == 0:  # the model run is much longer: sample it less often
            predictor.run(batch)
            if i >= 100:
                model_ms.append((time.perf_counter() - mid) * 1000)
        if i >= 100:
            decode_ms.append((mid - start) * 1000)
    d, m = np.median(decode_ms), np.median(model_ms)
    print(f"decode_single on [{heat.shape[0]},{heat.shape[1]},{heat.shape[2]}]: median {d:.4f} ms, "
          f"p90 {np.percentile(decode_ms, 90):.4f} ms ({args.runs} runs)")
    print(f"model run (onnxruntime, {args.threads} threads): median {m:.3f} ms; decode / model = {d / m:.3f}")
    print(f"budget {BUDGET_MS} ms: {'PASS' if d <= BUDGET_MS else 'FAIL'}")
    return 0 if d <= BUDGET_MS else 1


if __name__ == "__main__":
    script_main(main)
