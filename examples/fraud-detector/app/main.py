"""The fraud detector service: scores a transaction with the model baked into the image."""

from __future__ import annotations

import os
from functools import lru_cache

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_PATH = os.environ.get("MODEL_PATH", "/app/models/model.joblib")
FEATURES = ["amount", "hour", "merchant_risk", "card_age_days"]

app = FastAPI(title="fraud-detector")


class Transaction(BaseModel):
    amount: float
    hour: int
    merchant_risk: float
    card_age_days: int


@lru_cache(maxsize=1)
def model():  # loaded once, on first use, so the health check answers while the model is read
    return joblib.load(MODEL_PATH)


@app.get("/health")
def health() -> dict[str, str]:
    model()
    return {"status": "ok"}


@app.post("/predict")
def predict(transaction: Transaction) -> dict[str, float]:
    frame = pd.DataFrame([transaction.model_dump()], columns=FEATURES)
    return {"fraud_probability": float(model().predict_proba(frame)[0, 1])}
