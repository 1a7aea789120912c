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
    collate = pre.collate or torch.utils.data.default_collate  # (input, label) pairs -> batches
    x, _ = collate([(transform(r), 0) for r in raw])  # traced with
    alone, _ = collate([(transform(raw[0]), 0)])  # checked on too: another batch size (a text: another length)
    with torch.inference_mode():
        batches = [(b, model(b)) for b in (x, alone)]
    write, runner = (_onnx, _onnx_runner) if fmt == "onnx" else (_torchscript, _torchscript_runner)
    checked: dict[str, Any] = {}

    def write_checked(tmp: Path) -> None:  # checked before it takes the name: a failed check leaves nothing
        write(model, x, dynamic, tmp)
        checked.update(_checked(tmp, runner, batches))

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


def _onnx_runner(path: Path) -> tuple[Any, str] | None:
    """The exported file as a function of a batch under onnxruntime (None: onnxruntime is not installed)."""
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("%s is not checked: onnxruntime is not installed (pip install 'transferlab[export]')", path)
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])), \
        f"onnxruntime {onnxruntime.__version__}"


def _torchscript_runner(path: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation, as for trace
        loaded = torch.jit.load(str(path))
    return loaded, f"torch.jit {torch.__version__}"


def _checked(path: Path, runner: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """The check's record: the file's outputs on each batch against the run's; a difference above
    :data:`TOLERANCE` refuses the file."""
    run = runner(path)
    if run is None:
        return {"runtime": None, "max_abs_difference": None}
    fn, runtime = run
    diff = 0.0
    with torch.inference_mode():
        for x, expected in batches:
            got = fn(x)
            diff = max(diff, float((got.float() - expected).abs().max()) if got.shape == expected.shape
                       else float("inf"))
    if not diff <= TOLERANCE:
        raise UserError(f"the exported model gives probabilities up to {diff:.2g} away from the run's under "
                        f"{runtime} (more than {TOLERANCE:g}): this model does not export faithfully to this format")
    return {"runtime": runtime, "batches": [list(x.shape) for x, _ in batches], "max_abs_difference": diff,
            "tolerance": TOLERANCE}
