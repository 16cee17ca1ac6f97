"""One pruning run: spec strings in, measured results out.

This is the pipeline of the package, in order:
model + data → channel groups → scores (criterion) → plan → surgery → (recovery) → measurements.
Each (criterion, ratio) is computed once per :class:`PruneRun` and cached, so that the many gate
items that read it share one pruning. Nothing here knows pytest: the plugin and the benchmarks
both drive this class. The results it returns are :mod:`pytest_prune.pipeline.results`; what a compressed
model kept of the dense one (attributions, colour filters, latency) is :mod:`pytest_prune.pipeline.inspection`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..candidates import ExportedModel, load_candidate, match_filters
from ..criteria import get_criterion
from ..data import load_data
from ..data.bundle import DataBundle
from ..data.samples import first_samples
from ..equivalence import max_abs_difference
from ..errors import DataError, PruneError, SpecError
from ..groups import ChannelGroup
from ..measure import ModelCount, count_model, evaluate, evaluate_together, serialised_bytes
from ..measure.accuracy import EVALUATION_BATCH_SIZE
from ..measure.attribution import attribution_maps, predicted_classes
from ..measure.export import export_look, onnx_available
from ..measure.latency import backend_latency
from ..models import ModelInfo, load_model
from ..models.zoo import model_name
from ..plan import PrunePlan
from ..recovery import parse_recovery
from ..surgery import find_channel_groups, prune_model
from .inspection import FirstLayerColour, attribution_look, colour_look, first_layer_colour
from .methods import get_method, is_ratio_free
from .planning import Planning
from .fingerprint import state_dict_fingerprint
from .provenance import DIGEST_BATCH_SIZE, layer_counts, plan_record, split_identity, state_dict_digest
from .results import MethodResult, OneShot
from .settings import RunSettings
from .targets import Target, candidate_id, method_id, parse_target, target_label


class PruneRun(Planning):
    """A model, its data and every method measured on it, computed lazily and cached."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self._results: dict[tuple[str, str, str], MethodResult] = {}
        self._one_shot: dict[tuple[str, str], OneShot] = {}
        self.trace_notes: list[str] = []  # what tracing left alone on its own (auxiliary heads)
        # where recovery reports progress (the plugin connects pytest's terminal reporter)
        self.progress: Callable[[str], None] | None = None
        self._scores = {}  # see Planning._scores_of
        self._sensitivity = {}  # see Planning.sensitivity_tables
        self.recoveries: tuple[str, ...] = ()  # see Planning.recoveries (the plugin sets them)

    # -- inputs -------------------------------------------------------------------------------
    @cached_property
    def info(self) -> ModelInfo:
        s = self.settings
        info = load_model(s.model, s.weights, allow_pickle=s.allow_pickle)
        info.model.to(s.device).eval()
        return info

    @property
    def name(self) -> str:
        return self.settings.name or model_name(self.settings.model)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C, H, W of one sample: the model's if it says, else its data's."""
        return tuple(self._expected_shape() or self.data.input_shape)

    def _expected_shape(self) -> tuple[int, int, int] | None:
        """The shape the data must have: none where the model takes any size and the user chose
        the data (the channel count is checked once the data is loaded)."""
        if self.info.any_size and self.settings.data:
            return None
        return self.info.input_shape

    @property
    def colour_input(self) -> bool:
        """Whether the input has colour channels: on a grey input no filter is colour-selective,
        so the colour check could never fail."""
        return self.input_shape[0] >= 3

    @cached_property
    def data(self) -> DataBundle:
        spec = self.settings.data or self.info.default_data
        if not spec:
            raise SpecError(
                f"model {self.settings.model!r} has no default data; pass --prune-data "
                "(e.g. package.module:callable returning (x, y) tensors)"
            )
        bundle = load_data(spec, seed=self.settings.seed, input_shape=self._expected_shape(),
                           num_classes=self.info.num_classes)
        channels = self.info.input_shape[0] if self.info.input_shape else bundle.input_shape[0]
        if bundle.input_shape[0] != channels:
            raise DataError(
                f"--prune-data {spec!r} gives samples with {bundle.input_shape[0]} channels but "
                f"{self.settings.model!r} takes {channels}; choose data that fits the model"
            )
        limit = self.settings.eval_limit
        if limit is not None:  # a streamed split is cut as it streams, not read to learn its length
            bundle = dataclasses.replace(bundle, evaluation=first_samples(bundle.evaluation, limit))
        return bundle

    def check_inputs(self) -> None:
        """Build the model, load the data, and run one batch through it: a bad model or data spec,
        data of the wrong shape, or a model that cannot be traced fails here, once."""
        _ = self.data, self.example_input  # cached properties: loading them is the check
        try:
            with torch.no_grad():
                self.info.model(self.example_input)
        except Exception as exc:  # the model's own error, for the user to read
            raise DataError(
                f"model {self.settings.model!r} fails on a batch of {self.data_spec!r} samples "
                f"({'x'.join(map(str, self.input_shape))}): {type(exc).__name__}: {str(exc).splitlines()[0]}; "
                "check that --prune-data fits the model"
            ) from None
        _ = self.groups  # tracing errors name their fix

    @property
    def data_spec(self) -> str:
        return self.settings.data or self.info.default_data or ""

    @cached_property
    def example_input(self) -> torch.Tensor:
        x, _ = next(iter(self.data.loader("evaluation", batch_size=2)))
        return x.to(self.settings.device)

    @cached_property
    def equivalence_input(self) -> torch.Tensor:
        x, _ = next(iter(self.data.loader("evaluation", batch_size=self.settings.equivalence_images)))
        return x.to(self.settings.device)

    @cached_property
    def ignored_modules(self) -> tuple[str, ...]:
        """The modules ``--prune-ignore`` names, its glob patterns expanded."""
        names = [name for name, _ in self.info.model.named_modules() if name]
        chosen: set[str] = set()
        for pattern in self.settings.ignore:
            matched = fnmatch.filter(names, pattern)
            if not matched:
                raise SpecError(
                    f"--prune-ignore {pattern!r} matches no module of {self.settings.model!r}; use "
                    f"names from model.named_modules(), e.g. {', '.join(names[:4])}"
                )
            chosen.update(matched)
        return tuple(sorted(chosen))

    @cached_property
    def groups(self) -> list[ChannelGroup]:
        return find_channel_groups(self.info.model, self.example_input, ignore=self.ignored_modules,
                                   notes=self.trace_notes)

    @cached_property
    def dense_top1(self) -> float:
        """Measured once per run: alone when asked first, else with the first compressed model."""
        return evaluate(self.info.model, self._evaluation_batches(), self.settings.device).top1

    def top1_of(self, model: nn.Module) -> float:
        """``model``'s top-1. Until the dense model is measured, it is measured in the same pass
        over the evaluation data: a streamed split is read once for both."""
        if "dense_top1" in self.__dict__:
            return evaluate(model, self._evaluation_batches(), self.settings.device).top1
        both = evaluate_together((self.info.model, model), self._evaluation_batches(), self.settings.device)
        self.__dict__["dense_top1"] = both[0].top1  # what the cached property would have computed
        return both[1].top1

    def _evaluation_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.loader("evaluation", batch_size=EVALUATION_BATCH_SIZE)

    @cached_property
    def dense_count(self) -> ModelCount:
        return count_model(self.info.model, self.example_input)

    @cached_property
    def first_layer(self) -> FirstLayerColour | None:
        """The dense first layer's colour-selectivity, read by every method's colour check."""
        return first_layer_colour(self.info.model, self.groups, self.data, self.settings.colour_images)

    @cached_property
    def dense_storage(self) -> int:
        return serialised_bytes(self.info.model)

    @cached_property
    def calibration(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.calibration_batches(
            self.settings.calibration_images, batch_size=64, device=self.settings.device
        )

    @cached_property
    def dense_provenance(self) -> dict[str, Any]:
        """The dense model's digest, top-1 and weights file (a new release changes all three)."""
        return {
            "digest": state_dict_digest(self.info.model),
            "fingerprint": state_dict_fingerprint(self.info.model),  # equal up to another CPU's rounding
            "top1": self.dense_top1,
            "weights": Path(self.info.weights).name if self.info.weights else None,
        }

    @cached_property
    def data_provenance(self) -> dict[str, Any]:
        """Digests (bit-exact) and fingerprints (up to rounding) of the evaluation and calibration
        splits, images and labels."""
        record: dict[str, Any] = {"fingerprints": {}}
        for split in ("evaluation", "calibration"):
            record[split], record["fingerprints"][split] = split_identity(self.data.loader(split, DIGEST_BATCH_SIZE))
        return record

    def provenance(self, plan: PrunePlan | None, count: ModelCount, compressed: nn.Module) -> dict[str, Any]:
        """What one method was measured on: see :mod:`pytest_prune.pipeline.provenance`."""
        return {
            "dense_model": self.dense_provenance,
            "data": self.data_provenance,
            "plan": plan_record(self.groups, plan),
            "layers": layer_counts(count),
            "compressed_digest": state_dict_digest(compressed),
            "compressed_fingerprint": state_dict_fingerprint(compressed),
        }

    def settings_record(
        self, recovery: str = "none", criterion: str | None = None, target: Target | str | None = None
    ) -> dict[str, Any]:
        """The settings a baseline of ``criterion`` is only comparable under (the weights are
        provenance: a new release of the dense model is compared, and shown, not refused)."""
        s = self.settings
        return {
            "attribution": s.attribution_method,
            "data": self.data_spec,
            "seed": s.seed,
            "allocation": self.allocation_for(criterion, target),
            **({"sensitivity_recovery": s.sensitivity_recovery}
               if self.allocation_for(criterion, target) == "sensitivity" else {}),
            "recovery": recovery,
            **({"ignore": list(s.ignore)} if s.ignore else {}),
            **({"eval_limit": s.eval_limit} if s.eval_limit is not None else {}),
            **({"round_to": s.round_to} if s.round_to > 1 else {}),
        }

    # -- one method ---------------------------------------------------------------------------
    def method(
        self, criterion: str, target: Target | str | None, recovery: str = "none", inspect: bool = True
    ) -> MethodResult:
        """One method's result, cached; ``inspect=False`` leaves the looks (attribution, colour,
        latency) to :meth:`complete`."""
        target = parse_target(target) if isinstance(target, str) else target
        if target is not None and is_ratio_free(criterion):
            target = None  # the method chooses its own amount (e.g. tucker-vbmf)
        if target is None and not is_ratio_free(criterion):
            raise SpecError(f"{criterion!r} needs a ratio or budget (e.g. 0.5 or macs:0.5)")
        recovery = parse_recovery(recovery or "none").name
        key = (criterion, target_label(target), recovery)
        if key not in self._results:
            self._results[key] = self._measure(criterion, target, recovery)
        return self.complete(self._results[key]) if inspect else self._results[key]

    def results(self) -> list[MethodResult]:
        return list(self._results.values())

    def one_shot(self, criterion_name: str, target: Target | None) -> OneShot:
        """The compressed model straight out of surgery (or decomposition), cached."""
        key = (criterion_name, target_label(target))
        if key in self._one_shot:
            return self._one_shot[key]
        compress = get_method(criterion_name).compress
        if compress is not None:  # a decomposition, or meanvar's own mode (pytest_prune.pipeline.methods)
            self._one_shot[key] = compress(self, target)
        else:
            criterion = get_criterion(criterion_name)
            torch.manual_seed(self.settings.seed)
            start = time.perf_counter()
            plan, ratio = self._plan(criterion, target)
            self._one_shot[key] = self.pruned_shot(plan, time.perf_counter() - start, ratio)
        return self._one_shot[key]

    def pruned_shot(self, plan: PrunePlan, score_seconds: float, ratio: float | None) -> OneShot:
        model = self.info.model.eval()
        start = time.perf_counter()
        pruned = prune_model(model, self.groups, plan, self.example_input)
        return OneShot(
            plan=plan,
            ratio=ratio,
            model=pruned,
            top1=self.top1_of(pruned),
            count=count_model(pruned, self.example_input),
            score_seconds=score_seconds,
            prune_seconds=time.perf_counter() - start,
            equivalence_max_abs=max_abs_difference(model, pruned, self.groups, plan, self.equivalence_input),
        )

    def candidate(self, path: str | Path, inspect: bool = True) -> MethodResult:
        """Measure a release candidate made by any tool (a state dict or a torch.export program)
        against the dense model, with the same checks as a pruning of ours."""
        key = ("candidate", str(path), "none")
        if key in self._results:
            return self.complete(self._results[key]) if inspect else self._results[key]
        dense = self.info.model.eval()
        loaded = load_candidate(path, dense, self.example_input, groups=self.groups)
        match = loaded.match
        if match is None:
            try:  # which dense filters survived, for the colour check (exported graphs may not say)
                match = match_filters(dense, loaded.weights, self.groups)
            except PruneError as exc:
                loaded.notes.append(f"filters not matched to the dense model: {exc}")
        plan = match.plan if match is not None else loaded.plan
        model = loaded.model
        # MACs per sample: counted on one batch the program accepts (a static-batch program pads
        # a smaller one, and would count the padding)
        example = model.one_batch(self.example_input) if isinstance(model, ExportedModel) else self.example_input
        count = count_model(model, example)
        top1 = self.top1_of(model)
        result = self._result(
            criterion="candidate", method=candidate_id(path), model=model, plan=plan, count=count,
            top1=top1, storage_bytes=Path(path).stat().st_size, ratio=None, recovery="none",
            top1_one_shot=float("nan"), recovery_seconds=0.0, score_seconds=0.0, prune_seconds=0.0,
            equivalence_max_abs=None, notes=list(loaded.notes),
            match_mean_cosine=match.mean_cosine if match is not None else None,
        )
        self._results[key] = result
        return self.complete(result) if inspect else result

    # -- what the compressed model kept (see pytest_prune.pipeline.inspection), measured when asked -----
    LOOKS = ("attribution_retention", "colour_selectivity", "speedup")
    ON_REQUEST = ("export_equivalence",)  # measured only when a check names it (--prune-export)

    @cached_property
    def attribution_images(self) -> torch.Tensor:
        s = self.settings
        return self.data.evaluation_images(s.attribution_images).to(s.device)

    @cached_property
    def dense_attribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense model's predicted classes and attribution maps: computed once per run."""
        images, method = self.attribution_images, self.settings.attribution_method
        targets = predicted_classes(self.info.model, images)
        maps = attribution_maps(self.info.model, images, targets, method, normalise=self.data.normalise)
        return targets, maps

    def complete(self, result: MethodResult, *checks: str) -> MethodResult:
        """Measure the looks that ``checks`` need (all of them by default) and have not been measured:
        a gate of one check does not pay for integrated gradients, the colour index or latency."""
        model, s = result.pruned_model, self.settings
        for check in checks or self.LOOKS:
            if check in result.measured or check not in (*self.LOOKS, *self.ON_REQUEST) or model is None:
                continue
            if check == "attribution_retention":
                values = attribution_look(self.dense_attribution, model, self.attribution_images,
                                          s.attribution_method, self.data.normalise, self.info.model)
            elif check == "colour_selectivity":
                values = colour_look(result.plan, self.first_layer, s.colour_threshold) if self.colour_input else {}
            elif check == "export_equivalence":  # left unmeasured (the item skips) without the extra
                values = export_look(model, self.example_input, self.equivalence_input) if onnx_available() else {}
            else:
                values = backend_latency(self.info.model, model, self.equivalence_input, s.latency_repeats,
                                         s.latency_backend)
            for name, value in values.items():
                setattr(result, name, value)
            result.measured.add(check)
        return result

    def _measure(self, criterion_name: str, target: Target | None, recovery: str) -> MethodResult:
        shot = self.one_shot(criterion_name, target)
        s = self.settings
        model, top1, recovery_seconds = shot.model, shot.top1, 0.0
        if recovery != "none":
            recovered = parse_recovery(recovery).recover(
                self.info.model, shot.model, self.data, seed=s.seed, device=s.device,
                progress=self.progress, groups=self.groups, plan=shot.plan,
            )
            model, recovery_seconds = recovered.model, recovered.seconds
            top1 = self.top1_of(model)
        return self._result(
            criterion=criterion_name, method=method_id(criterion_name, target, recovery), model=model,
            plan=shot.plan, count=shot.count, top1=top1, storage_bytes=serialised_bytes(model),
            ratio=shot.ratio, recovery=recovery, top1_one_shot=shot.top1,
            recovery_seconds=recovery_seconds, score_seconds=shot.score_seconds,
            prune_seconds=shot.prune_seconds, equivalence_max_abs=shot.equivalence_max_abs,
            target=target_label(target), notes=list(shot.notes),
            removed_per_group={g.name: len(shot.plan.remove.get(g.name, ())) for g in self.groups if shot.plan},
        )

    def _result(
        self, *, criterion: str, method: str, model: nn.Module, plan: PrunePlan | None,
        count: ModelCount, top1: float, storage_bytes: int, **compressed: Any,
    ) -> MethodResult:
        """The one result builder: the dense side and the provenance from this run, the compressed
        side (how it was made and timed) from the caller."""
        return MethodResult(
            model=self.name, criterion=criterion, method=method,
            top1_dense=self.dense_top1, top1_pruned=top1,
            macs_dense=self.dense_count.macs, macs_pruned=count.macs,
            params_dense=self.dense_count.params, params_pruned=count.params,
            storage_bytes_dense=self.dense_storage, storage_bytes_compressed=storage_bytes,
            channels_total=sum(g.size for g in self.groups), channels_removed=plan.count() if plan else 0,
            provenance=self.provenance(plan, count, model), pruned_model=model, plan=plan,
            **compressed,
        )
