"""Train the tiny fraud model on synthetic transactions and write models/model.joblib.

Run it with the locked versions (scikit-learn 1.4.2, lightgbm, pandas 2.0.3): a model pickled by one
scikit-learn cannot be trusted in another, which is the failure mlenv exists to prevent.
Deterministic: a fixed seed and one thread, so the same versions write the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["amount", "hour", "merchant_risk", "card_age_days"]


def synthetic_transactions(rows: int, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "amount": rng.lognormal(3.5, 1.2, rows),
        "hour": rng.integers(0, 24, rows),
        "merchant_risk": rng.beta(2, 8, rows),
        "card_age_days": rng.integers(1, 3000, rows),
    })
    score = (frame.amount > 300) * 1.5 + (frame.hour < 5) * 1.0 + frame.merchant_risk * 3 - frame.card_age_days / 1500
    labels = (score + rng.normal(0, 0.5, rows) > 2.0).astype(int).to_numpy()
    return frame[FEATURES], labels


def main(out: Path) -> None:
    features, labels = synthetic_transactions(2000)
    model = make_pipeline(StandardScaler(), LGBMClassifier(n_estimators=30, num_leaves=8, random_state=7,
                                                           n_jobs=1, deterministic=True, verbose=-1))
    model.fit(features, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out)
    print(f"wrote {out} (train accuracy {model.score(features, labels):.3f})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models" / "model.joblib")
