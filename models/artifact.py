"""The model artifact: a skops file loaded with an explicit trusted type list, SHA-256 pinned."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.features import MODEL_FEATURES, model_matrix

ARTIFACT = "model.skops"
MANIFEST = "manifest.json"
DEFAULT_DIR = Path(__file__).parent / "default"

# The only types a model file may contain; anything else is refused before any object is built.
TRUSTED_TYPES = [
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "numpy.dtype",
    "numpy.ndarray",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "collections.OrderedDict",
]


class ArtifactError(Exception):
    """A model directory that cannot be trusted or used (missing file, hash mismatch, features)."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Model:
    """A loaded fraud model: the estimator, its version and the features it was trained on."""

    estimator: Any
    version: str
    features: list[str]
    manifest: dict[str, Any]

    def predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Fraud probability of each feature row (one predict_proba per micro-batch)."""
        if not rows:
            return np.zeros(0)
        matrix = model_matrix(rows)
        linear = self._linear()
        if linear is not None and np.isfinite(matrix).all():
            return linear(matrix)
        proba = self.estimator.predict_proba(matrix)
        return np.asarray(proba[:, 1], dtype=np.float64)

    def _linear(self) -> Any:
        """For a fitted StandardScaler + binary LogisticRegression pipeline: the same numpy
        operations scikit-learn's predict_proba runs (centre, scale, dot, expit), without its
        per-call input validation and fitted checks (~0.2 ms a call, most of a small batch's
        cost). Same floats, bit for bit (tests/unit/test_model_fastpath.py); None otherwise."""
        cached = self.__dict__.get("_linear_fn", False)
        if cached is not False:
            return cached
        self.__dict__["_linear_fn"] = fn = _linear_scorer(self.estimator)
        return fn


def _linear_scorer(estimator: Any) -> Any:
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        return None
    scaler, logreg = estimator.steps[0][1], estimator.steps[1][1]
    if type(scaler) is not StandardScaler or type(logreg) is not LogisticRegression:
        return None
    if len(logreg.classes_) != 2 or logreg.coef_.shape[0] != 1:
        return None
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None
    coef_t, intercept = logreg.coef_.T, logreg.intercept_

    def score(matrix: np.ndarray) -> np.ndarray:
        if mean is not None:
            matrix -= mean
        if scale is not None:
            matrix /= scale
        scores = (matrix @ coef_t + intercept).reshape(-1)
        return np.asarray(expit(scores, out=scores), dtype=np.float64)

    return score


def save_model(
    estimator: Any, out_dir: Path, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write model.skops and manifest.json (with the file's SHA-256); returns the manifest."""
    import skops.io as sio

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ARTIFACT
    sio.dump(estimator, path)
    _normalise_zip(path)
    untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
    if untrusted:
        raise ArtifactError(f"the model holds types outside the trusted list: {sorted(untrusted)}")
    manifest = {
        "model_version": version,
        "artifact": ARTIFACT,
        "sha256": sha256_of(path),
        "features": list(MODEL_FEATURES),
        **extra,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _normalise_zip(path: Path) -> None:
    """Rewrite the skops zip deflated, with fixed timestamps and array files named by their order
    in the schema (skops names them by object id): same model, same bytes, same hash."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = {info.filename: zin.read(info.filename) for info in zin.infolist()}
    schema = entries.pop("schema.json").decode("utf-8")
    renames: dict[str, str] = {}
    for found in re.finditer(r'"([0-9]+\.npy)"', schema):
        renames.setdefault(found.group(1), f"array-{len(renames):04d}.npy")
    if set(renames) != set(entries):
        raise ArtifactError("unexpected files in the skops archive")
    schema = re.sub(r'"([0-9]+\.npy)"', lambda m: f'"{renames[m.group(1)]}"', schema)
    ids: dict[str, str] = {}
    for found in re.finditer(r'"__id__": ([0-9]+)', schema):
        ids.setdefault(found.group(1), str(len(ids) + 1))
    schema = re.sub(r'"__id__": ([0-9]+)', lambda m: f'"__id__": {ids[m.group(1)]}', schema)
    renamed = {renames[name]: data for name, data in entries.items()}
    renamed["schema.json"] = schema.encode("utf-8")
    entries = renamed
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, data, compresslevel=9)


def load_model(model_dir: Path) -> Model:
    """Load and verify a model directory; raises ArtifactError saying what is wrong."""
    import skops.io as sio
    from threadpoolctl import threadpool_limits

    manifest_path = model_dir / MANIFEST
    if not manifest_path.exists():
        raise ArtifactError(f"{manifest_path}: no manifest (is {model_dir} a model directory?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path}: not JSON ({exc})") from None
    path = model_dir / str(manifest.get("artifact", ARTIFACT))
    if path.parent != model_dir or not path.exists():
        raise ArtifactError(f"{path}: the model file named by the manifest is missing")
    actual = sha256_of(path)
    if actual != manifest.get("sha256"):
        raise ArtifactError(
            f"{path}: SHA-256 {actual} does not match the manifest's {manifest.get('sha256')}"
        )
    if manifest.get("features") != list(MODEL_FEATURES):
        raise ArtifactError(
            f"{manifest_path}: trained on other features than this version computes; retrain"
        )
    try:
        estimator = sio.load(path, trusted=TRUSTED_TYPES)
    except Exception as exc:  # skops raises UntrustedTypesFoundException and others
        raise ArtifactError(f"{path}: refused by skops ({exc})") from None
    threadpool_limits(limits=1)  # one thread: scoring runs beside the event loop
    return Model(estimator, str(manifest["model_version"]), list(MODEL_FEATURES), manifest)
