"""``export``: a finished run as one file another runtime loads, and a sidecar JSON that says what goes in.

The exported graph is the run's model followed by its calibration and a softmax, so its output is exactly the
probabilities ``predict`` prints. Its input is what the model takes after the run's preprocessing (a batch of
normalised images, of standardised rows, or of padded token ids); the sidecar (``FILE.json``) states that
preprocessing as the run card records it, the classes in output order and the check made at export.

Formats: ``onnx`` (torch's ``torch.export``-based exporter, which needs the ``onnx`` and ``onnxscript`` packages;
checked with ``onnxruntime`` when it is installed: ``pip install 'transferlab[export]'`` brings all three) and
``torchscript`` (``torch.jit.trace``: deprecated by torch in favour of ``torch.export``, kept for runtimes that
still load TorchScript; checked by loading it back).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab import files
from transferlab import modality as modalities
from transferlab.errors import UserError
from transferlab.preflight import EXPORT_SCHEMA as SCHEMA
from transferlab.preflight import check_export
from transferlab.transfer.rundir import load_run

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # largest difference from predict's probabilities an exported file may show at export


class Probabilities(nn.Module):
    """The run's model, its logits divided by the calibration's temperature, then a softmax (``predict``)."""

    def __init__(self, net: nn.Module, temperature: float) -> None:
        super().__init__()
        self.net, self.temperature = net, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) / self.temperature).softmax(1)


def export(run_dir: str | Path, out: str | Path, fmt: str = "onnx") -> dict[str, Any]:
    """Write the run in ``run_dir`` to ``out`` in ``fmt`` and the sidecar to ``out`` + ``.json``; return the
    sidecar. Both files are written whole or not at all."""
    run_dir, out = Path(run_dir), Path(out)
    check_export(out, fmt)
    net, card = load_run(run_dir)
    kind = modalities.get(card.get("modality", "image"))
    pre = kind.preprocessing_from_dict(card["preprocessing"])
    temperature = float(card.get("calibration", {}).get("temperature", 1.0))
    model = Probabilities(net.eval(), temperature).eval()
    raw, dynamic = kind.export_examples(pre)
    transform = pre.transform(augment=False)
    collate = pre.collate or (lambda batch: (torch.stack([x for x, _ in batch]), None))
    x, _ = collate([(transform(r), 0) for r in raw])
    with torch.inference_mode():
        expected = model(x)
    write, check = (_onnx, _check_onnx) if fmt == "onnx" else (_torchscript, _check_torchscript)
    checked: dict[str, Any] = {}

    def write_checked(tmp: Path) -> None:  # checked before it takes the name: a failed check leaves nothing
        write(model, x, dynamic, tmp)
        checked.update(check(tmp, x, expected))

    out.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out, write_checked)
    sidecar = {
        "schema": SCHEMA, "format": fmt, "file": out.name, "run": str(run_dir.resolve()),
        "modality": kind.name,
        "input": {"name": "input", "dtype": str(x.dtype).removeprefix("torch."),
                  "shape": [dynamic.get(i, n) for i, n in enumerate(x.shape)],
                  "is": "the run's preprocessing applied to each input, batched (see preprocessing)"},
        "preprocessing": card["preprocessing"],
        "output": {"name": "probabilities", "classes": list(card["classes"]), "temperature": temperature,
                   "is": "softmax(logits / temperature): predict's probabilities, one column per class"},
        "check": checked,
    }
    files.write_json(Path(f"{out}.json"), sidecar)
    return sidecar


def _onnx(model: nn.Module, x: torch.Tensor, dynamic: dict[int, str], path: Path) -> None:
    shapes = ({i: torch.export.Dim(name, min=1) for i, name in dynamic.items()},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model, (x,), input_names=["input"], output_names=["probabilities"],
                                    dynamic_shapes=shapes, dynamo=True, verbose=False)
    program.save(str(path))


def _torchscript(model: nn.Module, x: torch.Tensor, dynamic: dict[int, str], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation (see the module docstring)
        torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(path))


def _check_onnx(path: Path, x: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("%s is not checked: onnxruntime is not installed (pip install 'transferlab[export]')", path)
        return {"runtime": None, "max_abs_difference": None}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    return _compared(path, got, expected, f"onnxruntime {onnxruntime.__version__}")


def _check_torchscript(path: Path, x: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation, as for trace
        got = torch.jit.load(str(path))(x)
    return _compared(path, got, expected, f"torch.jit {torch.__version__}")


def _compared(path: Path, got: torch.Tensor, expected: torch.Tensor, runtime: str) -> dict[str, Any]:
    """The check's record; an exported file whose outputs differ from the model's is refused."""
    diff = float((got.float() - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE:
        raise UserError(f"the exported model gives probabilities up to {diff:.2g} away from the run's under "
                        f"{runtime} (more than {TOLERANCE:g}): this model does not export faithfully to this format")
    return {"runtime": runtime, "inputs": int(expected.shape[0]), "max_abs_difference": diff,
            "tolerance": TOLERANCE}
