"""Filterable attributes and their want masks: one definition for the pool (Python side) and the kernels.

A user may restrict partners by these attributes only (``want_country`` etc. on a join). Each distinct value of an
attribute in one pool gets a code, its bit position in the 64-bit want masks; a mask of all ones accepts anyone.
"""

from __future__ import annotations

import numpy as np

FILTER_ATTRS = ("country", "language", "gender")  # column order of Pool.attr / Pool.want
ANY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # a want mask that accepts any partner value (no filter on that attribute)
MAX_VALUES = 64  # distinct values per attribute and pool: one bit each in the want masks
UNKNOWN = -1  # code of an attribute the user did not give: passes only an ANY mask
