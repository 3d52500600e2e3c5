"""Export a checkpoint's weights as named tensors (``.safetensors`` or ``.npz``) for other tools."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import safetensors.numpy

from mlm.egg.checkpoint import Checkpoint, atomic_write
from mlm.errors import MlmError


def export_weights(ckpt: Checkpoint, out_path: Path | str, tensors: list[tuple[str, int, int, int]]) -> Path:
    """Write the weights as named tensors to ``.safetensors`` or ``.npz`` (chosen by the suffix).

    ``tensors`` lists ``(name, rows, cols, offset)`` into the flat weight buffer, as the C core
    lays it out; a tensor with one row is exported as a 1-D vector of ``cols`` values.
    """
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".safetensors", ".npz"):
        raise MlmError(f"cannot export to {out_path}: the file name must end in .safetensors or .npz")
    arrays = _slice_tensors(ckpt.weights, tensors)
    config_json = json.dumps(ckpt.config.to_dict(), sort_keys=True)
    if suffix == ".safetensors":
        metadata = {
            "mlm_config": config_json, "step": str(ckpt.step), "weights_sha256": ckpt.weights_sha256(),
        }
        data = safetensors.numpy.save(arrays, metadata=metadata)
    else:
        if "__config__" in arrays:
            raise ValueError("a tensor may not be named __config__")
        buffer = io.BytesIO()
        np.savez(buffer, __config__=np.array(config_json), **arrays)
        data = buffer.getvalue()
    try:
        atomic_write(out_path, data)
    except OSError as error:
        raise MlmError(f"cannot write {out_path}: {error.strerror}; choose another output path") from None
    return out_path


def _slice_tensors(weights: np.ndarray, tensors: list[tuple[str, int, int, int]]) -> dict[str, np.ndarray]:
    """Cut the flat buffer into named arrays, checking the table against the buffer."""
    arrays: dict[str, np.ndarray] = {}
    for name, rows, cols, offset in tensors:
        end = offset + rows * cols
        if name in arrays or rows < 1 or cols < 1 or offset < 0 or end > weights.size:
            raise ValueError(
                f"tensor {name!r} ({rows}x{cols} at {offset}) does not fit {weights.size} weights "
                "or repeats a name"
            )
        values = weights[offset:end]
        arrays[name] = (values.copy() if rows == 1 else values.reshape(rows, cols).copy())
    return arrays
