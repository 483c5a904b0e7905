"""Input conversion and validation shared by the metrics.

Every metric accepts numpy arrays, torch tensors (any device, with or without grad) or nested
lists, and converts them here so that a bad input fails with a message naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, torch tensor or nested list

_BLOCK_ELEMENTS = 1 << 22  # ~32 MB of float64 per [block, width] temporary


def block_rows(width: int) -> int:
    """Rows per block so that a `[rows, width]` float64 temporary stays near 32 MB."""
    return max(16, _BLOCK_ELEMENTS // max(width, 1))


def to_numpy(x: ArrayLike) -> np.ndarray:
    """numpy view of `x`; torch tensors are detached and moved to the CPU (no torch import)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def as_embeddings(x: ArrayLike, name: str) -> np.ndarray:
    """`x` as float64 `[N, D]`, N >= 1, every value finite.

    Raises ValueError naming `name`, the shape, or the first non-finite row.
    """
    arr = to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite values (NaN/inf) in {rows.size} rows, "
            f"first at row {int(rows[0])}"
        )
    return arr


def as_labels(y: ArrayLike, n: int, name: str) -> np.ndarray:
    """`y` as a 1-D array of length `n` (ints, strings or any hashable numpy dtype)."""
    arr = to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the embeddings have {n} rows")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        first = int(np.argmin(np.isfinite(arr)))
        raise ValueError(f"{name} contains NaN/inf, first at index {first}")
    return arr


def as_targets(y: ArrayLike, n: int, name: str) -> np.ndarray:
    """Continuous targets as float64 `[n]`, all finite."""
    arr = as_labels(y, n, name)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric for a continuous target, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def show(value: Any) -> str:
    """A label for an error message: `3` or `'dog'`, never `np.int64(3)`."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by `max(||x||, eps)`: an all-zero row stays zero (as torch F.normalize)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def encode(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique classes, int64 index of each label into them)."""
    classes, idx = np.unique(labels, return_inverse=True)
    return classes, idx.astype(np.int64).reshape(-1)


def require_classes(classes: np.ndarray, minimum: int, name: str) -> None:
    if classes.size < minimum:
        raise ValueError(
            f"{name} has {classes.size} distinct class(es); at least {minimum} are needed"
        )


def require_class_size(
    classes: np.ndarray, counts: np.ndarray, minimum: int, what: str
) -> None:
    """Raise naming the first class with fewer than `minimum` samples."""
    small = np.flatnonzero(counts < minimum)
    if small.size:
        c = small[0]
        raise ValueError(
            f"class {show(classes[c])} has {int(counts[c])} sample(s), "
            f"fewer than {what} = {minimum}"
            + (f" ({small.size} classes are that small)" if small.size > 1 else "")
        )


def require_seen(classes: np.ndarray, test_labels: np.ndarray, what: str) -> None:
    """Raise when a test label never occurs in training: no classifier could predict it."""
    unseen = ~np.isin(test_labels, classes)
    if unseen.any():
        raise ValueError(
            f"test_labels contains class {show(test_labels[unseen][0])} that does not occur in "
            f"train_labels ({int(unseen.sum())} test samples); {what} cannot predict it"
        )


def require_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} has dimension {a.shape[1]} but {name_b} has dimension {b.shape[1]}"
        )


def guarded(fn, *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)`, or `{"skipped": reason}` when it raises ValueError (a metric the
    data cannot support: a single class, too few samples); the report says why."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return {"skipped": str(e).splitlines()[0]}
