"""Synthetic users with hidden latent traits and a ground-truth expected chat duration for every pair.

Hidden (what a learned model has to discover): a latent taste vector ``z`` and a chattiness ``c`` per user.
Observed: profile attributes (country, language, gender, age band) and ``SIGNAL_DIM`` behavioural signals, a
noisy linear view of ``(z, c)`` (think interest scores the client app computes). Ground truth:

    log E[duration(i, j)] = log(base) + AFFINITY * z_i . z_j / sqrt(LATENT_DIM) + SAME_AGE * [age_i == age_j]
                            + c_i + c_j

and a drawn duration is log-normal around it (mean preserved, ``NOISE_SIGMA`` on the log scale: heavy right
tail). The truth is bilinear in ``(1, z, one-hot age, c)``, so the oracle can run on the same engine as every
other policy. Seeded: the same seed gives the same market.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tickmatch.learning.features import RAW_DIM, featurize

LANGUAGES = ("en", "es", "ko", "ja", "pt")
COUNTRIES = {"en": ("US", "GB", "IN"), "es": ("ES", "MX"), "ko": ("KR",), "ja": ("JP",), "pt": ("BR", "PT")}
GENDERS = ("f", "m", "x")
AGE_BANDS = ("18-24", "25-34", "35-44", "45+")
LATENT_DIM = 8
SIGNAL_DIM = 12
AFFINITY = 0.8
SAME_AGE = 0.3
CHATTINESS_SD = 0.25
NOISE_SIGMA = 0.8
SIGNAL_NOISE = 0.1
ORACLE_DIM = 1 + LATENT_DIM + len(AGE_BANDS) + 1

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Population:
    """Column arrays of ``n`` users; user ``i`` is called ``f"u{i}"`` on the wire."""

    latent: F64
    chattiness: F64
    signals: F32
    language: I64
    country: list[str]
    gender: I64
    age_band: I64
    patience_s: F64
    clock_skew_s: F64
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
        latent = rng.standard_normal((n, LATENT_DIM))
        chattiness = CHATTINESS_SD * rng.standard_normal(n)
        # Signals: a fixed random mixing of (z, c / sd) seen through noise; the mixing is part of the hidden world.
        mixing = np.random.default_rng(seed ^ 0x5EED).standard_normal((LATENT_DIM + 1, SIGNAL_DIM))
        mixing /= np.sqrt(LATENT_DIM + 1)
        hidden = np.hstack([latent, (chattiness / CHATTINESS_SD)[:, None]])
        signals = hidden @ mixing + SIGNAL_NOISE * rng.standard_normal((n, SIGNAL_DIM))
        return cls(
            latent=latent,
            chattiness=chattiness,
            signals=signals.astype(np.float32),
            language=language,
            country=country,
            gender=gender,
            age_band=rng.integers(0, len(AGE_BANDS), size=n),
            patience_s=rng.exponential(60.0, size=n) + 10.0,
            clock_skew_s=rng.normal(0.0, 2.0, size=n),
            want_gender=wants,
            base_duration_s=base_duration_s,
        )

    def user_id(self, i: int) -> str:
        return f"u{i}"

    def shard_of(self, i: int) -> str:
        """Users wait in the pool of their language."""
        return f"lang-{LANGUAGES[int(self.language[i])]}"

    def attrs(self, i: int) -> dict[str, str | None]:
        return {
            "country": self.country[i],
            "language": LANGUAGES[int(self.language[i])],
            "gender": GENDERS[int(self.gender[i])],
            "age_band": AGE_BANDS[int(self.age_band[i])],
        }

    def signal_tuple(self, i: int) -> tuple[float, ...]:
        """User ``i``'s signals as they go on the wire (rounded: clients send a few decimals)."""
        return tuple(round(float(v), 4) for v in self.signals[i])

    def raw_matrix(self) -> F32:
        """Every user's raw feature vector (what the worker would compute from their join event)."""
        out = np.zeros((self.n, RAW_DIM), dtype=np.float32)
        for i in range(self.n):
            featurize(self.attrs(i), self.signal_tuple(i), out=out[i])
        return out

    def oracle_matrix(self) -> F32:
        """Hidden features ``(1, z, one-hot age, c)`` the ground truth is bilinear in (oracle only)."""
        out = np.zeros((self.n, ORACLE_DIM), dtype=np.float32)
        out[:, 0] = 1.0
        out[:, 1 : 1 + LATENT_DIM] = self.latent
        out[np.arange(self.n), 1 + LATENT_DIM + self.age_band] = 1.0
        out[:, -1] = self.chattiness
        return out

    def oracle_weights(self) -> F64:
        """``W`` with ``oracle_i . W . oracle_j == log E[duration(i, j)]``."""
        w = np.zeros((ORACLE_DIM, ORACLE_DIM))
        w[0, 0] = math.log(self.base_duration_s)
        z = slice(1, 1 + LATENT_DIM)
        w[z, z] = AFFINITY / math.sqrt(LATENT_DIM) * np.eye(LATENT_DIM)
        age = slice(1 + LATENT_DIM, 1 + LATENT_DIM + len(AGE_BANDS))
        w[age, age] = SAME_AGE * np.eye(len(AGE_BANDS))
        w[0, -1] = w[-1, 0] = 1.0
        return w

    def expected_log_duration(self, i: I64, j: I64) -> F64:
        """Ground truth ``log E[duration]`` of the pairs ``(i[k], j[k])``."""
        affinity = np.einsum("ij,ij->i", self.latent[i], self.latent[j]) / math.sqrt(LATENT_DIM)
        same_age = SAME_AGE * (self.age_band[i] == self.age_band[j])
        out: F64 = math.log(self.base_duration_s) + AFFINITY * affinity + same_age + self.chattiness[i]
        return out + self.chattiness[j]

    def expected_duration_s(self, i: int, j: int) -> float:
        """Ground truth: mean chat duration of one pair."""
        return float(np.exp(self.expected_log_duration(np.array([i]), np.array([j])))[0])

    def sample_durations_s(self, i: I64, j: I64, rng: np.random.Generator) -> F64:
        """Heavy-tailed draws around the pairs' expected durations (log-normal, mean preserved)."""
        mu = self.expected_log_duration(i, j)
        out: F64 = np.exp(mu - NOISE_SIGMA**2 / 2 + NOISE_SIGMA * rng.standard_normal(mu.shape[0]))
        return out

    def sample_duration_s(self, i: int, j: int, rng: np.random.Generator) -> float:
        """One draw (the live market's path)."""
        return float(self.sample_durations_s(np.array([i]), np.array([j]), rng)[0])
