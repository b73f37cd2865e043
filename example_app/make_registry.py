"""Rebuild the sample registry shipped in ``./registry``: ``python -m example_app.make_registry``.

The models are :class:`example_app.model.LinearModel` instances, saved through the public API, so
the sample is exactly what a training job would publish, signed (``model.sig``) with the DEMO key
shipped in ``example_app/keys``: a key for demonstration only, whose private half is public. Never
trust it in production; make your own (see docs/signing.md).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from example_app.model import LinearModel
from flask_model_registry import ModelRegistry

KEYS = Path(__file__).resolve().parent / "keys"
#: DEMO ONLY: the private key that signs the sample registry. It is public: never trust it in production.
DEMO_SIGNING_KEY = KEYS / "demo-only.priv"
#: DEMO ONLY: its public key, which ``make serve`` trusts (``MODEL_REGISTRY_TRUSTED_KEYS``).
DEMO_PUBLIC_KEY = KEYS / "demo-only.pub"

SAMPLES = [
    (
        "1.0.0",
        LinearModel(weights=(0.42, -1.3, 2.05), bias=0.5),
        {
            "stage": "prod",
            "description": "Baseline churn score, linear on three usage features",
            "features": ["sessions_per_week", "days_since_login", "support_tickets"],
            "metrics": {"auc": 0.812, "logloss": 0.431},
            "training": {"rows": 48210, "dataset": "churn-2026-09"},
        },
    ),
    (
        "1.1.0",
        LinearModel(weights=(0.47, -1.21, 2.31), bias=0.38),
        {
            "stage": "staging",
            "canary": True,
            "description": "Retrained on October data",
            "features": ["sessions_per_week", "days_since_login", "support_tickets"],
            "metrics": {"auc": 0.834, "logloss": 0.417},
            "training": {"rows": 53977, "dataset": "churn-2026-10"},
        },
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", nargs="?", default="registry", help="registry folder (replaced)")
    root = Path(parser.parse_args().root)
    shutil.rmtree(root, ignore_errors=True)
    registry = ModelRegistry(root, signing_key=DEMO_SIGNING_KEY)
    for version, model, metadata in SAMPLES:
        registry.save_model(version, model, metadata, actor="make_registry")
        print(f"saved {version} to {root}, signed with the DEMO key (never trust it in production)")


if __name__ == "__main__":
    main()
