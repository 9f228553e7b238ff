"""The training state: everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """Step counter, model variables, optimiser state and the run's base rng key.

  Per-step randomness is jax.random.fold_in(rng, step), so the key itself never changes and a
  resumed run draws the same dropout/masking noise as an uninterrupted one.
  """
  step: jax.Array  # int32 scalar: optimiser updates done
  params: Any
  batch_stats: Any  # BatchNorm running statistics ({} for models without BatchNorm)
  opt_state: Any
  rng: jax.Array  # uint32 [2] raw PRNG key

  def variables(self) -> dict[str, Any]:
    """The variable dict model.apply expects."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}
