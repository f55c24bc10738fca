"""Conformance of estimators (:func:`check_estimator`): well-formed, unbiased terms and re-allocations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from msframe.components import Estimator, Term
from msframe.testing.plumbing import ParamsLike, _calling, _expect, _prepare


def check_estimator(cls: type, params: ParamsLike = None, *, levels: int = 5, batches: Iterable[int] = (1, 3, 16)) -> None:
    """An estimator's terms are well-formed for every stage of up to ``levels`` meshes.

    For each number of available levels L = 1 … ``levels`` and each planned batch in ``batches``,
    ``terms(L, batch)`` must be a non-empty list of :class:`msframe.components.Term` with integer
    levels ``0 <= fine < L``, ``coarse`` None or ``fine < coarse < L``, integer ``batch >= 1``, a
    plain term (``coarse`` None) last, the same on a second call (the plan is made before the run),
    and it must telescope: counting +1 for every fine and plain level and −1 for every coarse
    level leaves exactly +1 on level 0, so the sum of the terms' expectations is the finest mesh's
    gradient, whatever the batch sizes (docs/method.md: the estimator is unbiased).

    ``reallocate_every()`` is an int >= 0; when it is positive, ``reallocate`` (given per-term
    variances, decaying or all zero, and per-sample costs) returns the same terms, levels unchanged,
    each with an integer batch >= 1.
    """
    estimator, who = _prepare(cls, Estimator, "estimator", params)
    with _calling(who, "reallocate_every()"):
        every = estimator.reallocate_every()
    _expect(isinstance(every, int) and every >= 0, who, f"reallocate_every() must be an int >= 0, got {every!r}")
    for available in range(1, levels + 1):
        for batch in batches:
            where = f"terms({available}, {batch})"
            with _calling(who, where):
                terms = estimator.terms(available, batch)
                again = estimator.terms(available, batch)
            _expect(isinstance(terms, (list, tuple)) and terms, who, f"{where} must be a non-empty list, got {terms!r}")
            _expect(terms == again, who, f"{where} differs between two calls: {terms} and {again}")
            for i, t in enumerate(terms):
                _expect(isinstance(t, Term), who, f"{where}: term {i} is {t!r}, not a msframe.components.Term")
                _expect(isinstance(t.fine, int) and 0 <= t.fine < available, who,
                        f"{where}: term {i} has fine level {t.fine!r}, outside 0 … {available - 1}")
                _expect(t.coarse is None or (isinstance(t.coarse, int) and t.fine < t.coarse < available), who,
                        f"{where}: term {i} has coarse level {t.coarse!r}; it must be None or between fine "
                        f"({t.fine}) and {available - 1}")
                _expect(isinstance(t.batch, int) and t.batch >= 1, who, f"{where}: term {i} has batch {t.batch!r}, "
                                                                       "not an int >= 1")
            _expect(terms[-1].coarse is None, who, f"{where}: the last term must be a plain term, got {terms[-1]}")
            weight: Counter = Counter()
            for t in terms:
                weight[t.fine] += 1
                if t.coarse is not None:
                    weight[t.coarse] -= 1
            net = {level: w for level, w in sorted(weight.items()) if w}
            _expect(net == {0: 1}, who, f"{where}: the terms do not telescope to the finest level (net weight per "
                                        f"level {net}, expected {{0: 1}}), so the estimate is biased: {terms}")
            if every:
                _check_reallocation(estimator, terms, where, who)


def _check_reallocation(estimator: Estimator, terms: list[Term], where: str, who: str) -> None:
    """``reallocate`` keeps the terms' levels and gives every term an integer batch >= 1."""
    # work units of one sample relative to the stage's finest mesh, as the trainer passes them
    costs = [4.0**-t.fine + (0.0 if t.coarse is None else 4.0**-t.coarse) for t in terms]
    for variances in ([4.0**-t.fine for t in terms], [0.0] * len(terms)):
        call = f"reallocate({where}, variances={variances}, costs={costs})"
        with _calling(who, call):
            chosen = estimator.reallocate(list(terms), variances, costs)
        _expect(isinstance(chosen, (list, tuple)) and len(chosen) == len(terms), who,
                f"{call} must return a list of {len(terms)} terms, got {chosen!r}")
        for old, new in zip(terms, chosen):
            _expect(isinstance(new, Term) and (new.fine, new.coarse) == (old.fine, old.coarse), who,
                    f"{call} changed the levels of {old} to {new!r}; only batch sizes may change")
            _expect(isinstance(new.batch, int) and new.batch >= 1, who,
                    f"{call} gave {new} a batch that is not an int >= 1")
