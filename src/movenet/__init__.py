"""movenet: MoveNet-style human pose estimation (exact PyTorch port, training, evaluation,
export, torch-free runtime)."""
from .errors import MoveNetError
from .schema import COCO17, KeypointSchema

__version__ = "0.1.0"


def _torch_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


# `from movenet import *` without torch takes the torch-free names only (create_predictor runs .onnx files)
__all__ = ["COCO17", "KeypointSchema", "MoveNetError", "__version__", "create_predictor"]
if _torch_installed():
    __all__ += ["create_model", "list_models", "load_model", "decode_single"]


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"create_model", "list_models", "load_model", "decode_single"})


def __getattr__(name):
    # Torch-dependent API is imported lazily so `import movenet` works without torch.
    if name in ("create_model", "list_models"):
        from . import model
        return getattr(model, name)
    if name == "load_model":
        from .checkpoint import load_model
        return load_model
    if name == "create_predictor":
        from .predict import create_predictor
        return create_predictor
    if name == "decode_single":
        from .decode import decode_single
        return decode_single
    raise AttributeError(name)
