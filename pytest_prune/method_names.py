"""The built-in methods and argument-free recovery steps by name, without importing torch.

Why: on a pytest-xdist controller the plugin checks ``--prune-criteria`` and ``--prune-recovery``
and orders the summary, but measures nothing; importing the registries (and so torch, 3-4 s) there
delayed the start of every worker. Names listed here are answered from these tuples; any other
name (a user's registered criterion, ``finetune:2``, a misspelling) goes to the registries, which
give the one error message. A test keeps the tuples equal to the registries.
"""

from __future__ import annotations

BUILTIN_METHODS: tuple[str, ...] = (
    "attribution", "attribution-corr", "bn-error", "car", "cpmc", "l1", "meanvar", "meanvar+tucker",
    "meanvar-auto", "random", "recal-error", "recon", "taylor", "taylor-plain", "tucker", "tucker-vbmf",
)
RATIO_FREE_METHODS: tuple[str, ...] = ("meanvar+tucker", "meanvar-auto", "tucker-vbmf")
PLAIN_RECOVERY_STEPS: tuple[str, ...] = ("bn", "lsq", "none")  # steps whose spec is their name


def check_method(name: str) -> str:
    """``name`` if it is a method, else the registry's :class:`~pytest_prune.errors.SpecError`."""
    if name.strip() in BUILTIN_METHODS:
        return name.strip()
    from .pipeline.methods import check_method as registered

    return registered(name)


def is_ratio_free(name: str) -> bool:
    """Whether the method takes no ratio (it chooses its own compression, as ``tucker-vbmf``)."""
    if name in BUILTIN_METHODS:
        return name in RATIO_FREE_METHODS
    from .pipeline.methods import is_ratio_free as registered

    return registered(name)


def recovery_name(spec: str) -> str:
    """The canonical name of a recovery spec (``LSQ + bn`` → ``lsq+bn``), as gate ids spell it."""
    steps = [part.strip().lower() for part in str(spec).split("+")]
    if all(s in PLAIN_RECOVERY_STEPS for s in steps) and (len(steps) == 1 or "none" not in steps):
        return "+".join(steps)
    from .recovery import parse_recovery  # arguments, unknown steps, bad syntax: the full parser

    return parse_recovery(spec).name
