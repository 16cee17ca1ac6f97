"""Exported candidates: a ``torch.export`` program (``.pt2``), checked, then loaded and wrapped.

``torch.export.load`` is *not* safe on a file from elsewhere as it stands (its docstring says so;
read in torch 2.14's ``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde``). Safe
parts: the graph is JSON, its operators are looked up by name on ``torch.ops``; weights are raw
bytes described by JSON. Unsafe parts, each of which this module refuses before torch reads the
archive:

* weights or constants flagged ``use_pickle`` (tensor subclasses), custom objects and opaque
  objects are unpickled with ``torch.load(weights_only=False)`` or ``pickle.loads``;
* the sample inputs, and legacy archives' weights, are read with ``weights_only=True`` but torch
  *retries with* ``weights_only=False`` when that fails — we load the sample inputs with
  ``weights_only=True`` first, so the retry can never be reached, and refuse legacy layouts;
* ``guards_code`` strings are compiled with ``exec`` by ``ExportedProgram.module()``, and
  symbolic-shape expressions (``expr_str``) are parsed by ``sympy.sympify``, which evaluates them:
  both must consist of the harmless tokens torch itself writes;
* ``data/aotinductor/`` holds compiled shared libraries that would be loaded; any entry outside the
  layout of a plain exported program is refused;
* graph nodes may call any attribute of ``torch`` by name: only ``torch.ops``, ``operator``,
  ``math`` and ``torch.sym_*`` targets are allowed.

This is a check of what torch 2.14 reads, written from its source, not a sandbox: a newer torch
may read more. The bytes checked are the bytes torch loads.
"""

from __future__ import annotations

import io
import json
import math
import re
import tokenize
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import WeightsError
from .files import CandidateFile

# Record layout of a plain torch.export archive (torch.export.pt2_archive.constants).
_PLAIN_RECORDS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/[^/]+|models/[^/]+\.json"
    r"|data/weights/[^/]+|data/constants/[^/]+|data/sample_inputs/[^/]+\.pt|extra/.+"
)
_CONFIGS = re.compile(r"data/(weights|constants)/[^/]+_(weights|constants)_config\.json")
_LEGACY_PAYLOADS = re.compile(r"data/(weights|constants)/[^/]+\.pt")
_TENSOR_CONSTANT = "tensor_"
_TARGETS = re.compile(r"torch\.ops\.[\w.]+|_operator\.\w+|math\.\w+|torch\.sym_\w+")

# Tokens of the expressions torch writes: sympy constructors, torch's sympy functions, symbols
# (s0, u3), assumption keywords. No attribute access, subscripts or other names are needed.
_SYMPY_NAMES = frozenset(
    "Symbol Integer Rational Float Max Min Abs Eq Ne Lt Le Gt Ge And Or Not True False "
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift "
    "RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity "
    "positive negative nonnegative nonpositive integer real finite zero nonzero even odd".split()
)
_SYMBOL = re.compile(r"[a-z]+\d+")
_GUARD_NAMES = frozenset(
    "L size stride storage_offset dim math isnan inf and or not True False".split()
)
_OPERATORS = frozenset("+ - * / // % ** ( ) , = == != < <= > >= & | ~".split())
_GUARD_OPERATORS = _OPERATORS | {"[", "]", "."}
_SKIPPED_TOKENS = {
    tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT
}


def _only_tokens(text: str, names, is_name, strings: re.Pattern, operators) -> bool:
    """Whether ``text`` tokenizes into allowed names, numbers, strings and operators only."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type in _SKIPPED_TOKENS or tok.type == tokenize.NUMBER:
            continue
        if tok.type == tokenize.NAME and (tok.string in names or is_name(tok.string)):
            continue
        if tok.type == tokenize.STRING and strings.fullmatch(tok.string):
            continue
        if tok.type == tokenize.OP and tok.string in operators:
            continue
        return False
    return True


def _safe_expression(text: str) -> bool:
    return _only_tokens(
        text, _SYMPY_NAMES, _SYMBOL.fullmatch, re.compile(r"'[a-z]+\d+'"), _OPERATORS
    )


def _safe_guard(text: str) -> bool:
    return _only_tokens(
        text, _GUARD_NAMES, lambda _: False, re.compile(r"'[A-Za-z_]\w*'"), _GUARD_OPERATORS
    )


def _walk(obj: Any) -> Iterable[dict]:
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk(value)


def _refuse(file: CandidateFile, why: str) -> WeightsError:
    return WeightsError(
        f"candidate file {str(file.path)!r} is a torch.export archive that pytest-prune will not "
        f"load: {why}. Only plain exported programs are accepted (torch.export.save of a program "
        "with ordinary tensors and no AOTInductor code), because torch.export.load can run code "
        "stored in other archives"
    )


def _json(file: CandidateFile, record: str) -> Any:
    try:
        return json.loads(file.read(record))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(file, f"{record} is not valid JSON ({exc})") from None


def _check_payload_config(file: CandidateFile, record: str) -> None:
    entries = _json(file, record).get("config", {})
    for name, entry in entries.items():
        if entry.get("use_pickle", False):
            raise _refuse(file, f"{name!r} is stored as a pickle")
        path_name = str(entry.get("path_name", ""))
        if "constants" in record and not path_name.startswith(_TENSOR_CONSTANT):
            raise _refuse(file, f"constant {name!r} is an object, not a tensor")


def _check_program(file: CandidateFile, record: str) -> None:
    program = _json(file, record)
    for guard in program.get("guards_code") or []:
        if not (isinstance(guard, str) and _safe_guard(guard)):
            raise _refuse(file, f"its guard {str(guard)[:80]!r} would be executed as code")
    for node in _walk(program):
        expr = node.get("expr_str")
        if expr is not None and not (isinstance(expr, str) and _safe_expression(expr)):
            raise _refuse(file, f"its shape expression {str(expr)[:80]!r} would be evaluated")
        target = node.get("target")
        if "inputs" in node and isinstance(target, str) and not _TARGETS.fullmatch(target):
            raise _refuse(file, f"a graph node calls {target[:80]!r}")


def check_archive(file: CandidateFile) -> None:
    """Refuse an archive whose loading could run code stored in it (see the module docstring)."""
    if file.read("archive_format") != b"pt2":
        raise _refuse(file, "its archive_format is not 'pt2'")
    for record in file.records:
        if not _PLAIN_RECORDS.fullmatch(record):
            raise _refuse(file, f"it holds {record!r} (compiled code or an unknown payload)")
        if _LEGACY_PAYLOADS.fullmatch(record):
            raise _refuse(file, f"it holds {record!r}, a legacy pickled payload")
    if "models/model.json" not in file.records:
        raise _refuse(file, "it holds no program named 'model'")
    for record in file.records:
        if _CONFIGS.fullmatch(record):
            _check_payload_config(file, record)
        elif record.startswith("models/"):
            _check_program(file, record)
        elif record.startswith("data/sample_inputs/"):
            try:
                # read onto the CPU: a program exported on a GPU is checked on any machine
                torch.load(io.BytesIO(file.read(record)), weights_only=True, map_location="cpu")
            except Exception as exc:  # any failure here would make torch retry unsafely
                raise _refuse(
                    file, f"its sample inputs are not plain tensors ({type(exc).__name__})"
                ) from None


_CONVOLUTIONS = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}


@dataclass(frozen=True)
class InputSpec:
    """The input an exported program's guards accept: a batch size range and a sample shape.

    torch.export fixes every dimension it was not told is dynamic: by default the batch is the
    example's (``Guard failed: x.size()[0] == 2`` for any other). ``high`` is None when the batch
    may be any size from ``low`` up; ``sample`` holds None for a dynamic non-batch dimension.
    """

    low: int
    high: int | None
    sample: tuple[int | None, ...]

    def describe(self) -> str:
        batch = str(self.low) if self.low == self.high else (
            f"{self.low}..{self.high if self.high is not None else ''}"
        )
        dims = ", ".join("any" if d is None else str(d) for d in self.sample)
        return f"batch {batch} × ({dims})"

    def call_size(self, preferred: int) -> int:
        """A batch size the program accepts, as close to ``preferred`` as its range allows."""
        return max(self.low, min(preferred, self.high if self.high is not None else preferred))

    def fits_sample(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.sample) and all(
            want is None or want == got for want, got in zip(self.sample, shape)
        )


def _bound(value: Any) -> int | None:
    return int(value) if value is not None and math.isfinite(float(value)) else None


def input_spec(program: torch.export.ExportedProgram) -> InputSpec:
    """What the first user input of ``program`` may be, read from its placeholder's fake tensor
    and the program's range constraints (the symbol of a ``torch.export.Dim``)."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    shape = node.meta["val"].shape
    ranges = {str(symbol): bounds for symbol, bounds in program.range_constraints.items()}

    def static(dim: Any) -> int | None:
        return int(dim) if isinstance(dim, int) else None

    batch = shape[0]
    if isinstance(batch, int):
        low, high = int(batch), int(batch)
    else:
        bounds = ranges.get(str(batch))
        low = max(1, _bound(bounds.lower) or 1) if bounds is not None else 1
        high = _bound(bounds.upper) if bounds is not None else None
    return InputSpec(low, high, tuple(static(d) for d in shape[1:]))


def _mark_convolutions(module: torch.fx.GraphModule) -> dict[str, str]:
    """Put an ``nn.Identity`` after every convolution of the graph, so that a forward hook can read
    a convolution's output as it reads an ``nn.Conv2d``'s (Grad-CAM hooks its target layer).

    Returns {layer name in the exported model (from the node's ``nn_module_stack``, else
    ``conv<i>``) → name of its marker module}, in graph order.
    """
    marks: dict[str, str] = {}
    graph = module.graph
    convolutions = [n for n in graph.nodes if n.op == "call_function" and n.target in _CONVOLUTIONS]
    for index, node in enumerate(convolutions):
        stack = node.meta.get("nn_module_stack") or {}
        layer = list(stack.values())[-1][0] if stack else f"conv{index}"
        marker = f"conv_output_{index}"
        module.add_submodule(marker, nn.Identity())
        with graph.inserting_after(node):
            output = graph.call_module(marker, (node,))
        node.replace_all_uses_with(output, delete_user_cb=lambda user: user is not output)
        marks[layer] = marker  # a layer called twice: the marker of its last call
    graph.lint()
    module.recompile()
    return marks


def _concatenate(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, (tuple, list)):
        return type(first)(_concatenate(list(parts)) for parts in zip(*outputs))
    raise WeightsError(
        f"an exported candidate returned {type(first).__name__}; pytest-prune measures programs "
        "that return a tensor (or a tuple of tensors) of per-sample outputs"
    )


class ExportedModel(nn.Module):
    """An exported program's module behind the ``nn.Module`` interface the measurements use.

    * The captured graph runs in the mode it was exported in; ``train()``/``eval()`` only record the
      flag here instead of raising (torch.export's module raises on ``.eval()``).
    * A batch the program's guards refuse is cut into batches it accepts, the last one padded by
      repeating its last sample, and the outputs put back together: a static-batch program is
      evaluated in batches of its own size. Samples are independent in eval mode, so padding
      changes no sample's output.
    * Every convolution's output passes through a marker module (:attr:`conv_outputs`), so that
      Grad-CAM can hook the same layer as on the dense model.
    """

    def __init__(self, program: torch.export.ExportedProgram, source: str):
        super().__init__()
        self.spec = input_spec(program)
        self.source = source
        self.program = program.module()
        self.conv_outputs = {
            layer: f"program.{marker}" for layer, marker in _mark_convolutions(self.program).items()
        }

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def weights(self) -> dict[str, torch.Tensor]:
        """The program's parameters and buffers under the exported model's layer names."""
        return self.program.state_dict()

    def check_input(self, x: torch.Tensor, what: str = "an input") -> None:
        """Raise :class:`WeightsError`, naming both shapes, if ``x``'s samples do not fit."""
        if not self.spec.fits_sample(tuple(x.shape[1:])):
            raise WeightsError(
                f"candidate file {self.source!r}: the exported program does not accept {what} "
                f"of shape {tuple(x.shape)}: it takes {self.spec.describe()}; export it for "
                f"samples of shape {tuple(x.shape[1:])}"
            )

    def batches(self, x: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """``x`` cut into (batch the program accepts, how many of its samples are real)."""
        low, high = self.spec.low, self.spec.high
        size = len(x) if high is None else min(len(x), high)
        pieces = []
        for chunk in x.split(max(size, 1)):
            real = len(chunk)
            if real < low:
                chunk = torch.cat([chunk, chunk[-1:].expand(low - real, *chunk.shape[1:])])
            pieces.append((chunk, real))
        return pieces

    def one_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The first batch of ``x`` the program accepts whole (padded by repeats if need be)."""
        return self.batches(x)[0][0]

    def forward(self, x):
        self.check_input(x)
        pieces = self.batches(x)
        if len(pieces) <= 1 and all(real == len(chunk) for chunk, real in pieces):
            return self.program(x)  # a batch the program accepts as it is
        return _concatenate([_first(self.program(chunk), real) for chunk, real in pieces])


def _first(output: Any, count: int) -> Any:
    if isinstance(output, (tuple, list)):
        return type(output)(_first(part, count) for part in output)
    return output[:count]


def load_exported(file: CandidateFile, example_input: torch.Tensor) -> ExportedModel:
    """The module of the exported program in ``file``, after :func:`check_archive`.

    The module runs the captured graph: it cannot be switched between train and eval mode
    (``torch.export`` raises on ``.eval()``); it behaves as the program was exported. Raises
    :class:`WeightsError` when the program's input shape does not fit ``example_input``'s samples.
    """
    from torch.export.passes import move_to_device_pass

    check_archive(file)
    try:
        program = torch.export.load(io.BytesIO(file.data))
        # a program keeps the device it was exported on, in its weights and in device arguments
        # of its graph; it runs where the example input is
        program = move_to_device_pass(program, example_input.device)
        model = ExportedModel(program, str(file.path))
    except Exception as exc:  # torch raises many types for archives of other versions
        raise WeightsError(
            f"candidate file {str(file.path)!r}: torch.export.load cannot read it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); export it "
            f"again with torch {torch.__version__.split('+')[0]}"
        ) from None
    model.check_input(example_input, "the example input")
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:
        raise WeightsError(
            f"candidate file {str(file.path)!r}: the exported program does not accept the "
            f"example input of shape {tuple(example_input.shape)} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); export it for this input shape"
        ) from None
    return model
