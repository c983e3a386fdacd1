"""Synthetic users with hidden latent traits and a ground-truth expected chat duration for every pair.

The hidden part (latent vectors) is what a learned model has to discover; the observed part (country,
language, gender, age band) is what the heuristic sees. Seeded: the same seed gives the same market.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

LANGUAGES = ("en", "es", "ko", "ja", "pt")
COUNTRIES = {"en": ("US", "GB", "IN"), "es": ("ES", "MX"), "ko": ("KR",), "ja": ("JP",), "pt": ("BR", "PT")}
GENDERS = ("f", "m", "x")
AGE_BANDS = ("18-24", "25-34", "35-44", "45+")
LATENT_DIM = 8


@dataclass(frozen=True, slots=True)
class Population:
    """Column arrays of ``n`` users; user ``i`` is called ``f"u{i}"`` on the wire."""

    latent: npt.NDArray[np.float64]
    language: npt.NDArray[np.int64]
    country: list[str]
    gender: npt.NDArray[np.int64]
    age_band: npt.NDArray[np.int64]
    patience_s: npt.NDArray[np.float64]
    want_gender: list[tuple[str, ...]]
    base_duration_s: float

    @property
    def n(self) -> int:
        return int(self.latent.shape[0])

    @classmethod
    def generate(cls, n: int, seed: int, base_duration_s: float = 90.0, filter_share: float = 0.1) -> Population:
        rng = np.random.default_rng(seed)
        language = rng.choice(len(LANGUAGES), size=n, p=[0.45, 0.2, 0.15, 0.1, 0.1])
        country = [str(rng.choice(COUNTRIES[LANGUAGES[lang]])) for lang in language.tolist()]
        gender = rng.choice(len(GENDERS), size=n, p=[0.45, 0.5, 0.05])
        wants: list[tuple[str, ...]] = []
        for _ in range(n):
            wants.append((str(rng.choice(("f", "m"))),) if rng.random() < filter_share else ())
        return cls(
            latent=rng.standard_normal((n, LATENT_DIM)),
            language=language,
            country=country,
            gender=gender,
            age_band=rng.integers(0, len(AGE_BANDS), size=n),
            patience_s=rng.exponential(60.0, size=n) + 10.0,
            want_gender=wants,
            base_duration_s=base_duration_s,
        )

    def user_id(self, i: int) -> str:
        return f"u{i}"

    def shard_of(self, i: int) -> str:
        """Users wait in the pool of their language."""
        return f"lang-{LANGUAGES[int(self.language[i])]}"

    def attrs(self, i: int) -> dict[str, str]:
        return {
            "country": self.country[i],
            "language": LANGUAGES[int(self.language[i])],
            "gender": GENDERS[int(self.gender[i])],
            "age_band": AGE_BANDS[int(self.age_band[i])],
        }

    def expected_duration_s(self, i: int, j: int) -> float:
        """Ground truth: mean chat duration of the pair (latent affinity plus an age-band effect)."""
        affinity = float(self.latent[i] @ self.latent[j]) / np.sqrt(LATENT_DIM)
        same_age = 0.3 if self.age_band[i] == self.age_band[j] else 0.0
        return self.base_duration_s * float(np.exp(0.8 * affinity + same_age))

    def sample_duration_s(self, i: int, j: int, rng: np.random.Generator) -> float:
        """A heavy-tailed draw around the pair's expected duration (log-normal, mean preserved)."""
        sigma = 0.8
        return self.expected_duration_s(i, j) * float(rng.lognormal(-sigma * sigma / 2, sigma))
