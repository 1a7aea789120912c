"""How long a run trains: until it has converged, by one rule for every arm, modality and strategy.

An arm compared after a fixed number of epochs is compared after a number of steps that shrinks with the data: at
10 images per class and batch 32, three epochs are six optimiser steps, and a model from scratch has not left
chance. So the budget is decided by the validation loss (the metric early stopping watches in Keras' and
Lightning's own examples, and smoother than accuracy on small validation sets):

- validate every epoch, or every few epochs when epochs are shorter than :data:`VAL_STEPS` steps, so that
  validations are about as far apart in steps whatever the data size;
- the learning rate drops 10x after :data:`PLATEAU_PATIENCE` + 1 validations without improvement
  (``ReduceLROnPlateau``), and training stops after ``--patience`` of them (Lightning's ``EarlyStopping``); an
  improvement is a validation loss lower by at least :data:`MIN_DELTA`;
- never before ``--min-steps`` optimiser steps (small data gets more epochs, not fewer steps), never beyond
  ``--epochs`` (default: :data:`~transferlab.config.MAX_EPOCHS` epochs or :data:`~transferlab.config.CAP_STEPS`
  steps, whichever is longer) or ``--max-steps``;
- the weights of the best validation are restored before the test, and the run records where they were.

A run that stopped at a cap while its validation loss was still improving has not converged: its test accuracy is
a lower bound of what the arm reaches, and compare says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from transferlab.config import CAP_STEPS, MAX_EPOCHS, FitConfig

VAL_STEPS = 10  # at most about this many optimiser steps between two validations (short epochs validate less often)
PLATEAU_PATIENCE = 2  # validations without improvement tolerated before the learning rate drops 10x
PLATEAU_FACTOR = 0.1
# A validation loss lower by less than this (in nats) is no improvement: on separable data the loss creeps towards 0
# for ever (the weights grow) while nothing the model predicts changes
MIN_DELTA = 1e-3


@dataclass(frozen=True)
class Budget:
    """The caps and the stopping rule of one run (all counts in this process's optimiser steps and epochs)."""

    steps_per_epoch: int
    max_epochs: int
    max_steps: int | None
    max_time: float | None  # seconds of training
    min_steps: int
    patience: int
    val_every: int  # epochs between validations
    early_stopping: bool  # False: --epochs or --max-steps fixes the budget and there is no validation split

    @classmethod
    def of(cls, cfg: FitConfig, n_train: int, world: int = 1, has_val: bool = True) -> Budget:
        """The budget for ``n_train`` training examples shared by ``world`` processes."""
        steps = max(1, math.ceil(math.ceil(n_train / world) / cfg.batch_size))
        val_every = max(1, math.ceil(VAL_STEPS / steps))
        if cfg.epochs is not None:  # a validation at the last epoch at least
            max_epochs = cfg.epochs
            val_every = min(val_every, max_epochs)
        else:  # room for the minimum and a full patience after it, ending on a validation
            max_epochs = max(MAX_EPOCHS, math.ceil(CAP_STEPS / steps),
                             math.ceil(cfg.min_steps / steps) + cfg.patience * val_every)
            max_epochs = -(-max_epochs // val_every) * val_every
        cap = max_epochs * steps if cfg.max_steps is None else min(cfg.max_steps, max_epochs * steps)
        return cls(steps_per_epoch=steps, max_epochs=max_epochs, max_steps=cfg.max_steps, max_time=cfg.max_time,
                   min_steps=min(cfg.min_steps, cap), patience=cfg.patience, val_every=val_every,
                   early_stopping=has_val)

    @property
    def cap_steps(self) -> int:
        return self.max_epochs * self.steps_per_epoch if self.max_steps is None else \
            min(self.max_steps, self.max_epochs * self.steps_per_epoch)

    def rule(self) -> str:
        """The rule in words, as the terminal and the report state it."""
        caps = f"at most {self.max_epochs} epochs" + ("" if self.max_steps is None else f", {self.max_steps} steps") \
            + ("" if self.max_time is None else f", {self.max_time:.0f} s")
        if not self.early_stopping:
            return f"a fixed budget ({caps}): no validation split to tell convergence"
        every = "every epoch" if self.val_every == 1 else f"every {self.val_every} epochs"
        return (f"until the validation loss stopped improving for {self.patience} validations ({every}), at least "
                f"{self.min_steps} steps, {caps}; the best validation's weights kept")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome(budget: Budget, steps: int, epochs: int, best_step: int | None, best_epoch: int | None,
            best_val_loss: float | None, waited: int) -> dict[str, Any]:
    """What a finished run records of its budget: where the best validation was and whether it converged (the
    validation loss had not improved for ``patience`` validations when training ended)."""
    converged = budget.early_stopping and waited >= budget.patience
    return {
        "rule": budget.rule(), **budget.to_dict(), "steps": steps, "epochs": epochs, "best_step": best_step,
        "best_epoch": best_epoch, "best_val_loss": best_val_loss, "validations_without_improvement": waited,
        "converged": converged,
    }
