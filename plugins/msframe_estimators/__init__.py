"""Built-in gradient estimators.

- ``single``: the plain loss at the stage's finest mesh.
- ``mge``: Multiscale Gradient Estimation, the telescoping sum
  mean_{S_L} ℓ_L + Σ_{l<L} [mean_{S_l} ℓ_l − mean_{S_l} ℓ_{l+1}] with one independent batch per term.
"""

from __future__ import annotations

from pydantic import Field

import msframe
import msframe.errors
from msframe.components import Estimator, Params, Term


class Single(Estimator):
    def terms(self, levels: int, batch: int) -> list[Term]:
        return [Term(0, None, batch)]


class MGE(Estimator):
    """Corrections between neighbouring levels, then a plain term on the coarsest level used.

    Level l (0 = the stage's finest mesh) gets ``batch × growth^l`` samples: growth 1 keeps the batch
    constant, 2 is the reference code, 4 the paper's figure (every level then costs the same). An
    explicit ``batches`` list (finest first) replaces the rule.
    """

    class Params(Params):
        levels: int = Field(0, ge=0)  # meshes used inside a stage; 0 = all down to the coarsest
        growth: float = Field(2.0, ge=1.0)
        batches: list[int] | None = None

    def levels_used(self, available: int) -> int:
        return min(self.params.levels or available, available)

    def batch_sizes(self, n: int, batch: int) -> list[int]:
        if self.params.batches is not None:
            if len(self.params.batches) < n or min(self.params.batches) < 1:
                raise msframe.errors.UserError(
                    f"{len(self.params.batches)} batch sizes for {n} levels; give at least one positive size per level",
                    key="estimator.batches",
                )
            return list(self.params.batches[:n])
        return [max(1, round(batch * self.params.growth**level)) for level in range(n)]

    def terms(self, levels: int, batch: int) -> list[Term]:
        n = self.levels_used(levels)
        sizes = self.batch_sizes(n, batch)
        return [Term(l, l + 1, sizes[l]) for l in range(n - 1)] + [Term(n - 1, None, sizes[n - 1])]


@msframe.hookimpl
def register_estimators(register):
    register("single", Single)
    register("mge", MGE)
