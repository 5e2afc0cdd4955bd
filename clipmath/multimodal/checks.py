"""Value checks of a training step that cost one host synchronisation, and a counter of those syncs.

Checking a value the device computed (is it finite? does it fit the dtype?) makes the host wait
for the device: ``bool(t)``, ``t.item()``, ``float(t)``. One such wait per check, several
checks per loss and a Sinkhorn solver inside it add up to more than ten waits per step on a
GPU, and each one breaks a ``torch.compile`` graph. :class:`PendingChecks` gathers the checks
of a step as device scalars and resolves them together, once, at the public boundary
(the loss's ``forward``); :func:`count_host_syncs` counts the waits a piece of code makes, so
tests can hold the hot path to its budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

#: Tensor methods that copy a value to the host, and so wait for the device.
SYNCING_METHODS = frozenset({"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero"})


class PendingChecks:
    """Checks of device values, resolved together with one host synchronisation.

    Each check is a tensor of values and a function of their floats that returns the error to
    raise, or None when they are fine. :meth:`resolve` copies every pending value to the host
    in one transfer and raises the first error, in the order the checks were added; an error
    function may inspect its tensors further (it runs on the error path only).

    Examples:
        >>> checks = PendingChecks()
        >>> x = torch.tensor([1.0, float("nan")])
        >>> checks.add(x.sum(), lambda v: None if v[0] == v[0] else ValueError("x: contains NaN"))
        >>> checks.resolve()
        Traceback (most recent call last):
        ...
        ValueError: x: contains NaN
    """

    def __init__(self) -> None:
        self._values: list[Tensor] = []
        self._errors: list[Callable[[list[float]], Exception | None]] = []

    def add(self, values: Tensor, error: Callable[[list[float]], Exception | None]) -> None:
        """Queue a check of ``values`` (any shape, read flattened) by ``error`` (see the class)."""
        self._values.append(values.detach().reshape(-1))
        self._errors.append(error)

    def resolve(self) -> None:
        """Run every pending check (one host sync) and clear them.

        Raises:
            Exception: the first error a check returns.
        """
        values, errors = self._values, self._errors
        self._values, self._errors = [], []
        if not values:
            return
        # float64 holds every float32 and float64 value and flag exactly (MPS has no float64).
        device = values[0].device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        flat = torch.cat([v.to(device=device, dtype=dtype) for v in values]).tolist()
        start = 0
        for value, error in zip(values, errors, strict=True):
            found = error(flat[start : start + value.numel()])
            start += value.numel()
            if found is not None:
                raise found


def check_or_defer(
    checks: PendingChecks | None, values: Tensor, error: Callable[[list[float]], Exception | None]
) -> None:
    """Queue a check on ``checks``, or run it now when ``checks`` is None (a function called on its own)."""
    pending = PendingChecks() if checks is None else checks
    pending.add(values, error)
    if checks is None:
        pending.resolve()


class _SyncCounter(TorchFunctionMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING_METHODS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count the calls that copy a tensor value to the host inside the ``with`` block.

    Counts the :data:`SYNCING_METHODS` called on tensors (``t.item()``, ``bool(t)``,
    ``float(t)``, ``t.tolist()``, ...), by method name, on any device: on the CPU they wait for
    nothing, but the same code on a GPU waits at each of them (an upper bound: a value that is
    already on the host counts too).

    Examples:
        >>> x = torch.ones(3)
        >>> with count_host_syncs() as syncs:
        ...     _ = bool(torch.isfinite(x).all()), x.sum().item()
        >>> sum(syncs.values())
        2
    """
    counts: Counter = Counter()
    with _SyncCounter(counts):
        yield counts
