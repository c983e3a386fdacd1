"""'May these two be matched?' as plain numpy over a pool's columns: the independent reference the engine's
kernels are tested against, and the check the simulator's exploration uses (no compiled code, no rustworkx).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tickmatch.matching.constraints import KEY_BASE, KEY_SHIFT
from tickmatch.matching.filters import ANY
from tickmatch.matching.pool import Pool


def allowed_matrix(pool: Pool, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: users ``slots[i]`` and ``slots[j]`` of ``pool`` may be matched (see :func:`allowed_pairs`)."""
    return allowed_pairs(pool.attr[slots], pool.want[slots], slots, pool.forbidden.keys())


def allowed_pairs(
    attr: npt.NDArray[np.int8],
    want: npt.NDArray[np.uint64],
    slots: npt.NDArray[np.int64],
    forbid_keys: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: users i and j may be matched — each accepts the other's attributes (mutual filters), their
    slots are not a forbidden pair, and they are not the same user. Written with plain numpy, independently of the
    engine's kernels, so comparing the two catches a bug in either."""
    ok = np.ones((slots.shape[0], slots.shape[0]), dtype=bool)
    for k in range(attr.shape[1]):
        w, code = want[:, k], attr[:, k]
        known = code >= 0
        shifts = np.where(known, code, 0).astype(np.uint64)
        hit = ((w[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)
        one_way = np.where(known[None, :], hit, (w == ANY)[:, None])
        ok &= one_way & one_way.T
    np.fill_diagonal(ok, False)
    position = {int(s): i for i, s in enumerate(slots.tolist())}
    for key in forbid_keys.tolist():
        a, b = position.get(key >> KEY_SHIFT), position.get(key & (KEY_BASE - 1))
        if a is not None and b is not None:
            ok[a, b] = ok[b, a] = False
    return ok
