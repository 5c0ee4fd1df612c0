"""Generated tables that look like the real ones users bring: never downloaded, never seen by tuner's code.

Each is a few thousand rows with what real tables have and toy sets lack: skewed numbers,
low- and high-cardinality categoricals whose levels carry signal, missing values (numbers and
categories), interactions, label noise, an imbalanced multiclass target and a skewed regression
target. Deterministic in their seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _categorical(rng: np.random.Generator, rows: int, levels: int, prefix: str, skew: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-like level frequencies (a few common levels, a long tail) and each level's hidden effect."""
    weights = 1.0 / np.arange(1, levels + 1) ** skew
    codes = rng.choice(levels, rows, p=weights / weights.sum())
    effect = rng.normal(0, 1, levels)
    return np.array([f"{prefix}{c:03d}" for c in codes], dtype=object), effect[codes]


def _holes(rng: np.random.Generator, frame: pd.DataFrame, columns: list[str], share: float) -> None:
    for column in columns:
        mask = rng.random(len(frame)) < share
        frame.loc[mask, column] = np.nan if pd.api.types.is_numeric_dtype(frame[column]) else None


def churn(rows: int = 6000, seed: int = 101) -> tuple[pd.DataFrame, np.ndarray]:
    """Binary, 18 % positive: tenure, spend, support calls, plan x contract interaction, a 300-level city."""
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(1.5, 18, rows).round()
    spend = np.exp(rng.normal(4, 0.6, rows)).round(2)
    calls = rng.poisson(1.5, rows)
    plan = rng.choice(["basic", "plus", "pro", "team"], rows, p=[0.45, 0.3, 0.15, 0.1]).astype(object)
    contract = rng.choice(["monthly", "yearly", "two-year"], rows, p=[0.55, 0.3, 0.15]).astype(object)
    city, city_effect = _categorical(rng, rows, 300, "city")
    device, _ = _categorical(rng, rows, 12, "dev")  # noise column
    noise = rng.normal(0, 1, (rows, 4))
    logit = (-2.2 - 0.035 * tenure + 0.45 * calls + 0.004 * (spend - 60)
             + 1.2 * ((plan == "basic") & (contract == "monthly")) - 0.8 * (contract == "two-year")
             + 0.7 * city_effect + 0.6 * (calls > 3) * (tenure < 12) + 0.3 * noise[:, 0] * noise[:, 1])
    target = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({"tenure_months": tenure, "monthly_spend": spend, "support_calls": calls, "plan": plan,
                          "contract": contract, "city": city, "device": device,
                          **{f"signal_{i}": noise[:, i] for i in range(4)}})
    _holes(rng, frame, ["monthly_spend", "plan", "city"], 0.06)
    return frame, np.where(target, "churned", "stayed").astype(object)


def land_use(rows: int = 5000, seed: int = 102) -> tuple[pd.DataFrame, np.ndarray]:
    """Multiclass, 4 imbalanced classes (55/25/15/5 %) on non-linear numeric boundaries, a soil type and a 150-level zone."""
    rng = np.random.default_rng(seed)
    elevation = rng.normal(0, 1, rows)
    slope = rng.gamma(2, 0.5, rows)
    moisture = rng.normal(0, 1, rows)
    distance = np.exp(rng.normal(0, 1, rows))
    soil = rng.choice(["clay", "loam", "sand", "peat", "chalk"], rows).astype(object)
    zone, zone_effect = _categorical(rng, rows, 150, "zone")
    extra = rng.normal(0, 1, (rows, 6))
    scores = np.stack([
        np.zeros(rows) + 1.2,
        0.9 * np.sin(2 * elevation) + 0.8 * moisture + 0.6 * (soil == "peat") + 0.5 * zone_effect,
        1.2 * elevation * slope - 0.6 * np.log(distance) + 0.8 * (soil == "sand") - 0.6,
        1.5 * (moisture > 1) * (elevation < 0) + 0.5 * extra[:, 0] * extra[:, 1] + 0.7 * zone_effect - 1.4,
    ], axis=1) + rng.gumbel(0, 0.7, (rows, 4))
    label = scores.argmax(axis=1)
    names = np.array(["forest", "farmland", "grassland", "wetland"], dtype=object)
    frame = pd.DataFrame({"elevation": elevation, "slope": slope, "moisture": moisture, "road_distance": distance,
                          "soil": soil, "zone": zone, **{f"band_{i}": extra[:, i] for i in range(6)}})
    _holes(rng, frame, ["moisture", "soil", "band_2"], 0.05)
    return frame, names[label]


def house_prices(rows: int = 6000, seed: int = 103) -> tuple[pd.DataFrame, np.ndarray]:
    """Regression, log-normal price: area x quality interaction, age, a 200-level neighbourhood, gaps."""
    rng = np.random.default_rng(seed)
    area = np.exp(rng.normal(4.6, 0.35, rows)).round()
    rooms = np.clip((area / 30 + rng.normal(0, 0.8, rows)).round(), 1, 10)
    age = rng.integers(0, 120, rows).astype(float)
    quality = rng.choice(["poor", "fair", "good", "excellent"], rows, p=[0.1, 0.4, 0.35, 0.15]).astype(object)
    quality_level = pd.Series(quality).map({"poor": 0, "fair": 1, "good": 2, "excellent": 3}).to_numpy()
    hood, hood_effect = _categorical(rng, rows, 200, "hood", skew=0.9)
    heating = rng.choice(["gas", "electric", "oil", "heat-pump"], rows).astype(object)
    log_price = (11.5 + 0.9 * np.log(area / 100) * (1 + 0.15 * quality_level) + 0.12 * quality_level
                 - 0.003 * age + 0.002 * np.maximum(age - 90, 0) ** 1.5 / 10 + 0.25 * hood_effect
                 + 0.05 * (heating == "heat-pump") + rng.normal(0, 0.18, rows))
    frame = pd.DataFrame({"area_m2": area, "rooms": rooms, "age_years": age, "quality": quality,
                          "neighbourhood": hood, "heating": heating, "lot_noise": rng.normal(0, 1, rows)})
    _holes(rng, frame, ["age_years", "heating", "neighbourhood"], 0.05)
    return frame, np.exp(log_price).round(-2)


def delivery_time(rows: int = 4000, seed: int = 104) -> tuple[pd.DataFrame, np.ndarray]:
    """Regression, right-skewed minutes: distance, traffic x hour interaction, weather, a 60-level courier."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2, 2.5, rows)
    hour = rng.integers(0, 24, rows)
    weather = rng.choice(["clear", "rain", "snow", "fog"], rows, p=[0.6, 0.25, 0.08, 0.07]).astype(object)
    vehicle = rng.choice(["bike", "scooter", "car"], rows, p=[0.3, 0.45, 0.25]).astype(object)
    courier, courier_effect = _categorical(rng, rows, 60, "c", skew=0.5)
    rush = ((hour >= 7) & (hour <= 9)) | ((hour >= 17) & (hour <= 19))
    speed = np.select([vehicle == "bike", vehicle == "scooter"], [14.0, 22.0], 28.0)
    minutes = (8 + 60 * distance / speed * (1 + 0.6 * rush * (vehicle == "car"))
               * np.select([weather == "snow", weather == "rain"], [1.6, 1.2], 1.0)
               + 3 * courier_effect + rng.gamma(2, 2.5, rows))
    frame = pd.DataFrame({"distance_km": distance.round(2), "hour": hour, "weather": weather, "vehicle": vehicle,
                          "courier": courier, "items": rng.poisson(3, rows)})
    _holes(rng, frame, ["weather", "distance_km"], 0.04)
    return frame, minutes.round(1)


def credit_default(rows: int = 10000, seed: int = 105) -> tuple[pd.DataFrame, np.ndarray]:
    """Binary, 9 % positive, mostly numeric (30 columns, 8 informative, two thresholds) and one 500-level employer."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, 30))
    X[:, 5] = np.exp(X[:, 5])  # a skewed income-like column
    employer, employer_effect = _categorical(rng, rows, 500, "emp", skew=1.2)
    logit = (-3.0 + 0.9 * X[:, 0] - 0.7 * X[:, 1] + 0.6 * X[:, 2] * X[:, 3] + 1.1 * (X[:, 4] > 1.2)
             - 0.35 * np.log(X[:, 5]) + 0.5 * np.abs(X[:, 6]) + 0.4 * np.sin(3 * X[:, 7]) + 0.5 * employer_effect)
    target = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({f"x{i:02d}": X[:, i] for i in range(30)})
    frame["employer"] = employer
    _holes(rng, frame, ["x01", "x05", "employer"], 0.07)
    return frame, np.where(target, "default", "paid").astype(object)


TABLES = {
    "churn": (churn, "binary", "roc_auc"),
    "land_use": (land_use, "multiclass", "accuracy"),
    "house_prices": (house_prices, "regression", "rmse"),
    "delivery_time": (delivery_time, "regression", "rmse"),
    "credit_default": (credit_default, "binary", "roc_auc"),
}
