"""Built-in gradient estimators.

- ``single``: the plain loss at the stage's finest mesh.
- ``mge``: Multiscale Gradient Estimation, the telescoping sum
  mean_{S_L} ℓ_L + Σ_{l<L} [mean_{S_l} ℓ_l − mean_{S_l} ℓ_{l+1}] with one independent batch per term.
- ``mlmc``: MGE with batches re-allocated to the multilevel Monte Carlo optimum from online variances.
"""

from __future__ import annotations

import math

from pydantic import Field

import msframe
import msframe.errors
from msframe.components import Estimator, Params, Term

#: the plugin API this plugin is written for (msframe/api.py): backbones return corrections
MSFRAME_API = ">=2,<3"


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


class MLMC(MGE):
    """MGE whose batches follow the multilevel Monte Carlo optimum N_l ∝ sqrt(V_l / C_l).

    Minimising the estimator's variance Σ V_l / N_l at a fixed work per iteration W = Σ N_l C_l gives
    N_l = W sqrt(V_l / C_l) / Σ_k sqrt(V_k C_k). The first block uses the ``growth`` rule; every
    ``every`` iterations the engine passes each term's mean per-sample variance over the last block
    (of ℓ_fine − ℓ_coarse for a correction, of ℓ for the plain term: a cheap loss-level proxy for the
    gradient variance) and its cost per sample C_l in work units, and the batches are re-allocated
    with W held at the planned work per iteration: the engine passes the *planned* terms, so
    re-allocations never drift from the plan (rounding to whole samples moves each block's work by
    at most half a sample per level, and never accumulates). Between re-allocations shapes are static.
    """

    class Params(MGE.Params):
        every: int = Field(50, ge=1)  # iterations between re-allocations
        min_batch: int = Field(1, ge=1)
        max_batch: int = Field(4096, ge=1)

    def reallocate_every(self) -> int:
        return self.params.every

    def reallocate(self, terms: list[Term], variances: list[float], costs: list[float]) -> list[Term]:
        budget = sum(t.batch * c for t, c in zip(terms, costs))
        floor = 1e-12 * max(max(variances), 1e-30)  # a level that measured no variance still gets min_batch
        weights = [math.sqrt(max(v, floor) / c) for v, c in zip(variances, costs)]
        scale = budget / sum(w * c for w, c in zip(weights, costs))
        p = self.params
        return [Term(t.fine, t.coarse, min(p.max_batch, max(p.min_batch, round(scale * w)))) for t, w in zip(terms, weights)]


@msframe.hookimpl
def register_estimators(register):
    register("single", Single)
    register("mge", MGE)
    register("mlmc", MLMC)
