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
import re
import tokenize
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
                torch.load(io.BytesIO(file.read(record)), weights_only=True)
            except Exception as exc:  # any failure here would make torch retry unsafely
                raise _refuse(
                    file, f"its sample inputs are not plain tensors ({type(exc).__name__})"
                ) from None


class ExportedModel(nn.Module):
    """An exported program's module behind the ``nn.Module`` interface the measurements use.

    The captured graph runs in the mode it was exported in; ``train()``/``eval()`` only record the
    flag here instead of raising (torch.export's module raises on ``.eval()``).
    """

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def forward(self, x):
        return self.program(x)


def load_exported(file: CandidateFile, example_input: torch.Tensor) -> nn.Module:
    """The module of the exported program in ``file``, after :func:`check_archive`.

    The module runs the captured graph: it cannot be switched between train and eval mode
    (``torch.export`` raises on ``.eval()``); it behaves as the program was exported.
    """
    check_archive(file)
    try:
        module = torch.export.load(io.BytesIO(file.data)).module()
    except Exception as exc:  # torch raises many types for archives of other versions
        raise WeightsError(
            f"candidate file {str(file.path)!r}: torch.export.load cannot read it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); export it "
            f"again with torch {torch.__version__.split('+')[0]}"
        ) from None
    try:
        with torch.no_grad():
            module(example_input)
    except Exception as exc:
        raise WeightsError(
            f"candidate file {str(file.path)!r}: the exported program does not accept the "
            f"example input of shape {tuple(example_input.shape)} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); export it for this input shape"
        ) from None
    return ExportedModel(module)
