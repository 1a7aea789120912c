"""The command-line options, each declared once: a FitConfig field with its type, default and help
(``config.opt``) is the option; commands take them by group (:func:`takes`), so that ``--help`` lists every
option with its help and default and the command receives the group's values as keyword arguments. Typer reads
options from a function's signature only and cannot take a dataclass as a group (fastapi/typer#154): :func:`takes`
writes the group's parameters into the command's signature."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_type_hints

import typer

from transferlab import catalogue
from transferlab.config import DEFAULT_ARCH, FitConfig

FIT = FitConfig()
ARCH = DEFAULT_ARCH
SEEDS = 3  # compare and layers: the fewest that get a verdict

Arch = Annotated[str, typer.Option(help="Architecture trained from scratch: " + ", ".join(
    f"{k.examples[0] if k.examples else k.name} ({k.modality})" for k in catalogue.source_kinds()
    if k.listed and k.weights.startswith("none")) + " or timm:<arch>.")]
Seeds = Annotated[int, typer.Option(help="Seeds per arm or candidate (a verdict on transfer needs 3 or more).")]


@dataclass(frozen=True)
class Group:
    """Options that travel together. Each is a FitConfig field, whose type, default and help (``config.opt``) make
    the option, or one of ``own`` (annotated parameters of options that are not FitConfig's)."""

    name: str
    options: tuple[str, ...] = ()
    own: tuple[inspect.Parameter, ...] = ()

    @functools.cached_property
    def parameters(self) -> tuple[inspect.Parameter, ...]:
        """The group's options as keyword parameters (made once: every command gets the same objects)."""
        hints, by_name = get_type_hints(FitConfig), {f.name: f for f in fields(FitConfig)}
        return tuple(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=by_name[n].default, annotation=(
            Annotated[hints[n], typer.Option(help=by_name[n].metadata["help"])])) for n in self.options) + self.own


def _flag(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                             annotation=Annotated[bool, typer.Option(help=help)])


BUDGET = Group("budget", ("epochs", "max_steps", "max_time", "min_steps", "patience", "batch_size", "lr", "seed"))
INPUTS = Group("inputs", ("image_size", "eval_per_class"))
HARDWARE = Group("hardware", ("accelerator", "devices", "num_nodes", "distributed", "precision", "compile",
                              "channels_last", "pin_memory", "deterministic", "num_workers"))
DATA = Group("data", ("text_model", "max_vectors", "text_column", "label_column", "encoding_errors", "impute"))
JUDGING = Group("judging", ("metric", "class_weight", "sampler"))
OUTPUT = Group("output", ("logger",), own=(
    _flag("resume", "Continue an interrupted run in --out, reusing what it finished."),
    _flag("overwrite", "Start over in --out: deletes what transferlab wrote there, and only that (refused when the "
                       "folder holds anything else).")))
TRAINING = (BUDGET, INPUTS, HARDWARE, DATA, JUDGING, OUTPUT)  # every command that trains on data takes these


def option(name: str, **changes: Any) -> Any:
    """A FitConfig option as a command's own parameter's annotation (its help from ``config.opt``)."""
    f = next(f for f in fields(FitConfig) if f.name == name)
    return Annotated[get_type_hints(FitConfig)[name], typer.Option(help=changes.get("help", f.metadata["help"]))]


Source, Weights, PerClass, Strict, BackboneLrMult = (option(n) for n in ("source", "weights", "per_class", "strict",
                                                                         "backbone_lr_mult"))


def takes(*groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add each group's fields to a command's parameters (after its own, before its ``**options``, which receives
    them): a shared option is declared once, in its group, and ``--help`` lists it with its help and default."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        sig, hints = inspect.signature(command), get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [p for group in groups for p in group.parameters]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            return command(*args, **kwargs)

        run.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return run

    return wrap


