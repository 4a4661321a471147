"""Latency of several models side by side: model only (one forward pass on a prepared batch)
and end to end (read the image file -> preprocess -> run -> decode), measured interleaved
(every iteration runs every model, in a rotating order) so that all see the same machine load.

Model entries: ``torch`` (PyTorch eager), ``onnx`` (our ONNX export of the same model, run in
onnxruntime), ``torch:MODEL``/``onnx:MODEL`` for another model than the base one (``MODEL@SIZE``
at another input size, e.g. ``onnx:lightning@224``), an exported ``.onnx`` file (fp32 or int8;
it has movenet metadata), or an external MoveNet-format ``.onnx``/``.tflite`` (Google's graphs,
which decode inside the graph).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MoveNetError
from .image import read_image
from .runtime import Predictor


@dataclass
class Timing:
    label: str
    model_ms: list[float]
    e2e_ms: list[float]

    def stats(self, which: str) -> dict[str, float]:
        t = np.asarray(self.model_ms if which == "model" else self.e2e_ms)
        median = float(np.median(t))
        return {"median": median, "p90": float(np.percentile(t, 90)), "fps": 1000.0 / median}


def open_model(entry: str, base: str = "lightning", threads: int | None = None) -> tuple[str, Predictor]:
    """(label, predictor) for a model entry (see the module doc).

    Several models take turns on the same cores here, so onnxruntime's threads must not
    busy-wait between runs (they would steal the cores from the next model): every onnxruntime
    session is opened without spinning, and PyTorch's OpenMP threads are made passive."""
    from .predict import EXPORTED, file_predictor

    backend, _, spec = entry.partition(":")
    if backend in ("torch", "onnx") and not Path(entry).is_file():
        model = spec or base
        if Path(model).suffix.lower() in EXPORTED:
            raise MoveNetError(f"{entry}: {model} is an exported model, which runs in its own runtime: give the "
                               "file itself as an entry")
        if backend == "torch":
            if "torch" not in sys.modules:
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from .predict import create_predictor
            return f"torch:{model}", create_predictor(model, backend="torch", threads=threads)
        from .export import export_onnx_cached
        from .runtime import OnnxPredictor
        return f"onnx:{model}", OnnxPredictor(str(export_onnx_cached(model)), threads=threads, spinning=False)
    from .runtime import ReferencePredictor

    path = Path(entry)
    if not path.is_file():
        raise MoveNetError(f"{entry}: no such model file (entries: torch, onnx, torch:MODEL, onnx:MODEL, "
                           "or a .onnx/.tflite file)")
    if path.suffix.lower() not in EXPORTED:
        raise MoveNetError(f"{entry}: not an exported model (.onnx, .tflite); a checkpoint is an entry as "
                           f"torch:{entry} or onnx:{entry}")
    predictor = file_predictor(str(path), threads=threads, spinning=False)
    if not isinstance(predictor, ReferencePredictor) or path.suffix.lower() != ".onnx":
        return path.name, predictor
    reference = predictor
    session = _session(path, threads)  # the same model, opened without spinning
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    reference.run = lambda batch: session.run([out], {inp: batch})[0]
    return path.name, reference


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(predictors: dict[str, Predictor], image: str | os.PathLike, runs: int = 100,
            warmup: int = 10, progress: bool = True, block: int = 1, refine: bool = False) -> list[Timing]:
    """Interleaved timing of every predictor on ``image``; ``warmup`` rounds are not counted.
    ``refine``: end to end is ``movenet predict``'s two looks (``tracking.predict_person``)
    instead of one.

    ``block`` > 1: in every round each model runs ``block`` times in a row and the first run
    of each block is not counted, which measures the steady state of one model running frame
    after frame (switching models every run evicts the caches and penalises the smaller, faster
    models most). ``runs`` counts the measured runs per model either way."""
    from tqdm import tqdm

    if block < 1:
        raise MoveNetError(f"block must be at least 1, got {block}")
    labels = list(predictors)
    batches = {k: p.preprocess(read_image(image))[0] for k, p in predictors.items()}
    timings = {k: Timing(k, [], []) for k in labels}
    counted = block - 1 if block > 1 else 1
    rounds = warmup + -(-runs // counted)
    from .tracking import predict_person

    phases = (("model_ms", lambda k: predictors[k].run(batches[k])),
              ("e2e_ms", lambda k: predict_person(predictors[k], read_image(image), refine=refine)))
    for i in tqdm(range(rounds), desc="benchmark", unit="round", file=sys.stderr, disable=not progress):
        order = labels[i % len(labels):] + labels[:i % len(labels)]
        for field_name, call in phases:
            for k in order:
                for j in range(block):
                    ms = _time_ms(lambda: call(k))
                    if i >= warmup and (block == 1 or j > 0):
                        getattr(timings[k], field_name).append(ms)
    for t in timings.values():
        del t.model_ms[runs:], t.e2e_ms[runs:]
    return [timings[k] for k in labels]


def _time_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def format_table(timings: list[Timing]) -> str:
    """Markdown table; ratios are medians divided by the first model's."""
    ref_model, ref_e2e = timings[0].stats("model")["median"], timings[0].stats("e2e")["median"]
    rows = ["| model | model-only median ms | p90 | FPS | ratio | end-to-end median ms | p90 | FPS | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in timings:
        m, e = t.stats("model"), t.stats("e2e")
        rows.append(f"| {t.label} | {m['median']:.2f} | {m['p90']:.2f} | {m['fps']:.0f} | "
                    f"{m['median'] / ref_model:.2f} | {e['median']:.2f} | {e['p90']:.2f} | {e['fps']:.0f} | "
                    f"{e['median'] / ref_e2e:.2f} |")
    return "\n".join(rows)


def report_dict(timings: list[Timing], settings: dict) -> dict:
    return {"settings": settings,
            "models": [{"label": t.label, "model_ms": t.stats("model"), "end_to_end_ms": t.stats("e2e")}
                       for t in timings]}


def run_benchmark(entries: list[str], base: str = "lightning", threads: int | None = 2, runs: int = 100,
                  warmup: int = 10, image: str | os.PathLike | None = None,
                  block: int = 1, refine: bool = False) -> tuple[list[Timing], dict]:
    """Open every entry, measure them interleaved; returns (timings, settings)."""
    image = Path(image) if image else Path(__file__).parent / "assets" / "astronaut.jpg"
    read_image(image)  # a bad image fails here, before the models load
    predictors: dict[str, Predictor] = {}
    for entry in entries:
        label, predictor = open_model(entry, base, threads)
        while label in predictors:
            label += "'"
        predictors[label] = predictor
    timings = measure(predictors, image, runs, warmup, block=block, refine=refine)
    settings = {"threads": threads, "runs": runs, "warmup": warmup, "block": block, "refine": refine,
                "image": str(image),
                "cpu": _cpu_name(), "cores": os.cpu_count()}
    return timings, settings


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()
