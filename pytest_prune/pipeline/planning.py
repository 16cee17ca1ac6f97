"""How a run turns a criterion and a target into a plan: which allocation, a channel fraction or
a budget, and the sensitivity analysis behind ``--prune-allocation sensitivity``.

A part of :class:`~pytest_prune.pipeline.run.PruneRun` (its base class), kept apart so that the run
module holds inputs, methods and measurements; it reads the run's settings, model, groups, dense
counts and calibration batches.
"""

from __future__ import annotations

import torch

from ..allocations import BUDGET_ALLOCATION
from ..criteria import Criterion, ScoringContext, get_criterion, known_criteria
from ..criteria.base import Scores
from ..plan import PrunePlan
from ..recovery import parse_recovery
from ..recovery.lsq import LeastSquaresReconstruction
from ..recovery.lsq_shared import SharedLsqCapture
from ..devices import resolve_device
from ..sensitivity import SensitivityTable, plan_by_sensitivity
from ..sensitivity.analysis import DEFAULT_FRACTIONS, DEFAULT_IMAGES
from .budget import BUDGET_KINDS, Budget, PlanCost, plan_at_ratio, plan_for_budget
from .targets import Target


class Planning:
    """The planning steps of a run (mixed into :class:`~pytest_prune.pipeline.run.PruneRun`)."""

    # criterion name → its one-shot scores: scored once per run, shared by every target (see _scores_of)
    _scores: dict[str, Scores]
    # criterion name → its sensitivity table: analysed once, shared by every target
    _sensitivity: dict[str, SensitivityTable]
    # the recoveries the run will apply (the plugin's --prune-recovery; results do not depend on
    # them, only what scoring shares with them: _shared_lsq)
    recoveries: tuple[str, ...]

    def allocation_for(self, criterion: str | None, target: Target | str | None = None) -> str:
        """The allocation ``criterion`` is planned with: ``--prune-allocation`` when given, else the
        criterion's natural one, except that a ``macs:``/``params:`` budget (``target``: a Budget or
        its label, ``macs0.5``) of a criterion that is naturally ``layerwise`` gets
        :data:`~pytest_prune.allocations.BUDGET_ALLOCATION` (why: that module);
        ``layerwise`` for methods that are no criterion (decompositions, ``meanvar-auto``,
        candidates), which allocate nothing."""
        if self.settings.allocation is not None:
            return self.settings.allocation
        if criterion in known_criteria():
            natural = get_criterion(criterion).natural_allocation
            budget = isinstance(target, Budget) or (isinstance(target, str) and target.startswith(BUDGET_KINDS))
            return BUDGET_ALLOCATION if budget and natural == "layerwise" else natural
        return "layerwise"

    def _scoring_context(self, criterion: Criterion) -> ScoringContext:
        s = self.settings
        ctx = ScoringContext(
            model=self.info.model,
            groups=self.groups,
            batches=self.calibration if criterion.needs_data else [],
            seed=s.seed,
            device=torch.device(s.device),
            shared_dense_pass=self._shared_lsq() if criterion.needs_data else None,
        )
        ctx.kept_scores = lambda: self._scores_of(criterion, ctx)
        return ctx

    def _shared_lsq(self) -> SharedLsqCapture | None:
        """The dense capture of the first ``lsq`` step among the run's ``recoveries`` (what the
        plugin's ``--prune-recovery`` names), for ``recon``'s scoring pass to take as well
        (:mod:`pytest_prune.recovery.lsq_shared`); None when no recovery of the run has ``lsq``."""
        for spec in self.recoveries:
            for step in parse_recovery(spec).steps:
                if isinstance(step, LeastSquaresReconstruction):
                    s = self.settings
                    return SharedLsqCapture(step, self.info.model, self.data, self.groups, s.seed,
                                            resolve_device(s.device))
        return None

    def _scores_of(self, criterion: Criterion, ctx: ScoringContext) -> Scores:
        """``criterion``'s one-shot scores, computed at its first target of the run and kept for the
        others: they depend on the model, groups, calibration batches and seed, which a run holds
        fixed, and not on the ratio, so ``recon-0.3``, ``recon-0.5`` and ``recon-0.7`` share one
        scoring pass (the first method's ``score_seconds`` pays it). Every ``ScoringContext`` of the
        run carries it as ``kept_scores``, which ``Criterion.plan``, the budget search and
        ``taylor``'s first round read (``criteria.base.one_shot_scores``); iterative and greedy
        criteria still re-score their later rounds inside their own ``plan``."""
        if criterion.name not in self._scores:
            self._scores[criterion.name] = criterion.scores(ctx)
        return self._scores[criterion.name]

    def _plan(self, criterion: Criterion, target: Target) -> tuple[PrunePlan, float]:
        """The criterion's plan for a channel fraction, or for the fraction that meets a budget."""
        ctx = self._scoring_context(criterion)
        allocation = self.allocation_for(criterion.name, target)
        if allocation == "sensitivity":
            return self._plan_by_sensitivity(criterion, ctx, target)
        round_to = self.settings.round_to  # --prune-round-to: kept counts multiples of it
        if isinstance(target, float):
            return plan_at_ratio(criterion, ctx, target, allocation, round_to), target  # type: ignore[arg-type]
        cost = PlanCost(self.info.model, self.groups, self.dense_count)
        return plan_for_budget(criterion, ctx, target, cost, allocation, round_to=round_to)  # type: ignore[arg-type]

    def _plan_by_sensitivity(self, criterion: Criterion, ctx: ScoringContext, target: Target) -> tuple[PrunePlan, float]:
        """The plan of the ``sensitivity`` allocation (:mod:`pytest_prune.sensitivity`): the
        criterion's sensitivity table on the calibration data, measured once per run, then split."""
        cost = PlanCost(self.info.model, self.groups, self.dense_count)
        scores, table = self._scores_of(criterion, ctx), self._sensitivity.get(criterion.name)
        if table is None:  # minutes on a deep network on a CPU: say what is running, and the way out
            self._say(f"{criterion.name}: sensitivity analysis of {len(self.groups)} channel groups "
                      f"(up to {1 + len(self.groups) * (1 + len(DEFAULT_FRACTIONS))} partial passes over up to "
                      f"{DEFAULT_IMAGES} calibration images); --prune-allocation layerwise skips it")
        plan, table = plan_by_sensitivity(
            criterion, ctx, target, cost, recovery=self.settings.sensitivity_recovery,
            batches=self.calibration, scores=scores, table=table, round_to=self.settings.round_to,
        )
        if criterion.name not in self._sensitivity:
            self._say(f"{criterion.name}: sensitivity analysis done, {table.passes} passes on {table.images} "
                      f"images in {table.seconds:.1f} s")
        self._sensitivity[criterion.name] = table
        return plan, plan.count() / sum(g.size for g in self.groups)

    def _say(self, message: str) -> None:
        progress = getattr(self, "progress", None)  # the plugin connects pytest's terminal
        if progress is not None:
            progress(message)

    @property
    def sensitivity_tables(self) -> list[SensitivityTable]:
        """The sensitivity tables this run measured (one per criterion planned by sensitivity)."""
        return list(self._sensitivity.values())
