"""``cdss-train evaluate``: the paper's tables for the internal and external sites, and what
the field expects beyond them, from one or more ``cdss-train fit`` folders (one per model).

Tables 2 and 3 of the paper (internal, external): the fold-averaged ensemble's accuracy,
precision, recall, F1 and AUC at the model's decision threshold (Youden on the out-of-fold
probabilities, in ``fit.json``); here with a bootstrap 95 % confidence interval of the AUC
(2000 resamples of cases, stratified by label, seeded) and the Brier score. Table 4: each fold
model's metrics, mean ± sd over the folds. Figure 4: ROC curves (PNG). Beyond the paper: a
paired DeLong test of the AUCs of every two models on the same cases (DeLong et al. 1988, in
the fast form of Sun & Xu 2014), calibration (observed rate per decile of predicted
probability, PNG and CSV) and decision curves (net benefit against treat-all and treat-none,
Vickers & Elkin 2006). Everything is written as CSV and Markdown into OUT, with ``report.md``.

For a cohort of ``cdss-train synth-cohort`` (``truth.csv`` and ``generator.json`` beside the
manifest the fit was trained from), the table ``bayes_<role>`` puts the generator's
Bayes-optimal score beside the models: its AUC on the very cases the models were tested on, with
its bootstrap interval, and the documented population value. A model cannot do better than the
Bayes score for its inputs, except by chance on a finite site.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from training import paper
from training.metrics import auc, metrics

ROLES = ("internal", "external")
METRICS = ("accuracy", "precision", "recall", "f1", "auc")
BOOTSTRAP = 2000
NET_BENEFIT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


@dataclass(frozen=True)
class ModelPredictions:
    name: str
    threshold: float
    folds: int
    rows: list[dict]
    manifest: str | None = None          # the cohort manifest the fit was trained from
    roles: dict | None = None            # fit.json's roles: the site of each
    architecture: str = ""

    def role(self, role: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Labels, ensemble probabilities and case ids of one role, in case-id order."""
        chosen = sorted((r for r in self.rows if r["role"] == role), key=lambda r: r["case_id"])
        return (np.array([int(r["egfr_mutant"]) for r in chosen]),
                np.array([float(r["ensemble"]) for r in chosen]),
                [r["case_id"] for r in chosen])

    def fold_scores(self, role: str, k: int) -> np.ndarray:
        chosen = sorted((r for r in self.rows if r["role"] == role), key=lambda r: r["case_id"])
        return np.array([float(r[f"fold_{k}"]) for r in chosen])


def load_model(fit_dir: Path) -> ModelPredictions:
    if not (fit_dir / "fit.json").is_file():
        raise ValueError(f"{fit_dir}: no fit.json: not a finished cdss-train fit folder (still "
                         "running, or stopped? run the same cdss-train fit again to resume it)")
    summary = json.loads((fit_dir / "fit.json").read_text())
    with (fit_dir / "predictions.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    settings = summary["settings"]
    return ModelPredictions(f"{settings['architecture']} ({fit_dir.name})",
                            float(summary["decision_threshold"]), int(settings["folds"]), rows,
                            summary.get("manifest"), summary.get("roles"),
                            settings["architecture"])


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, seed: int = 0,
                  resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile interval of the AUC over case resamples stratified by label."""
    rng = np.random.default_rng(seed)
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([rng.choice(positive, len(positive)),
                                 rng.choice(negative, len(negative))])
        values.append(auc(labels[chosen], scores[chosen]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def delong(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Paired DeLong test of two AUCs on the same cases: (z, two-sided p)."""
    positive, negative = labels == 1, labels == 0
    v10, v01 = [], []
    for scores in (a, b):
        x, y = scores[positive][:, None], scores[negative][None, :]
        psi = (x > y) + 0.5 * (x == y)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    covariance = s10 / positive.sum() + s01 / negative.sum()
    difference = v10[0].mean() - v10[1].mean()
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if variance <= 0:
        return 0.0, 1.0
    z = float(difference / np.sqrt(variance))
    return z, float(2 * stats.norm.sf(abs(z)))


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean predicted probability and observed mutant rate per decile of prediction."""
    order = np.argsort(scores, kind="stable")
    return [{"cases": len(part), "mean_predicted": float(scores[part].mean()),
             "observed": float(labels[part].mean())}
            for part in np.array_split(order, min(bins, len(order))) if len(part)]


def calibration_curve(labels: np.ndarray, scores: np.ndarray, points: int = 50
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A smooth calibration curve: logistic regression of the outcome on the logit of the
    prediction (calibration intercept and slope), over the range of the predictions."""
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(scores, 1e-6, 1 - 1e-6)
    logit = np.log(clipped / (1 - clipped))[:, None]
    grid = np.linspace(clipped.min(), clipped.max(), points)
    if len(set(labels.tolist())) < 2:
        return grid, np.full(points, float(labels.mean()))
    fitted = LogisticRegression(C=1e6).fit(logit, labels)
    return grid, fitted.predict_proba(np.log(grid / (1 - grid))[:, None])[:, 1]


def brier(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean((scores - labels) ** 2))


def net_benefit(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Vickers & Elkin: TP/n - FP/n x pt / (1 - pt) at threshold probability pt."""
    treated = scores >= threshold
    n = len(labels)
    tp, fp = np.sum(treated & (labels == 1)), np.sum(treated & (labels == 0))
    return float(tp / n - fp / n * threshold / (1 - threshold))


def ensemble_row(model: ModelPredictions, role: str) -> dict:
    labels, scores, _ = model.role(role)
    low, high = bootstrap_auc(labels, scores)
    return {"model": model.name, "cases": len(labels), "mutant": int(labels.sum()),
            **metrics(labels, scores, model.threshold), "auc_95ci": f"{low:.3f}-{high:.3f}",
            "brier": round(brier(labels, scores), 4),
            "paper_acc_prec_rec_f1_auc": paper.ensemble_metrics(model.architecture, role)}


def fold_row(model: ModelPredictions, role: str) -> dict:
    labels, _, _ = model.role(role)
    per_fold = [metrics(labels, model.fold_scores(role, k), model.threshold)
                for k in range(1, model.folds + 1)]
    return {"model": model.name, **{
        name: f"{np.mean([m[name] for m in per_fold]):.3f} ± "
              f"{np.std([m[name] for m in per_fold], ddof=1):.3f}" for name in METRICS},
        "paper_auc": paper.FOLD_AUC.get((model.architecture, role), "")}


def delong_rows(models: list[ModelPredictions], role: str) -> list[dict]:
    rows = []
    for i, first in enumerate(models):
        for second in models[i + 1:]:
            labels, a, ids_a = first.role(role)
            _, b, ids_b = second.role(role)
            if ids_a != ids_b:
                raise ValueError(f"{first.name} and {second.name}: different {role} cases")
            z, p = delong(labels, a, b)
            rows.append({"model_a": first.name, "model_b": second.name,
                         "auc_a": round(auc(labels, a), 4), "auc_b": round(auc(labels, b), 4),
                         "z": round(z, 3), "p": float(f"{p:.3g}")})   # 3 digits: 2.1e-05
    return rows


def generator_truth(model: ModelPredictions) -> tuple[dict[str, dict], dict] | None:
    """``truth.csv`` rows by case id and ``generator.json`` of a synthetic cohort's fit."""
    folder = Path(model.manifest).parent if model.manifest else None
    if folder is None or not (folder / "truth.csv").is_file():
        return None
    with (folder / "truth.csv").open(newline="") as stream:
        truth = {row["case_id"]: row for row in csv.DictReader(stream)}
    return truth, json.loads((folder / "generator.json").read_text())


def bayes_rows(model: ModelPredictions, role: str, truth: dict[str, dict], generator: dict
               ) -> list[dict]:
    """The generator's Bayes score on the model's cases of ``role``, per set of inputs."""
    labels, _, ids = model.role(role)
    if [int(truth[i]["egfr_mutant"]) for i in ids] != labels.tolist():
        raise ValueError(f"{model.name}: {role} labels differ from the generator's truth.csv")
    rows = []
    for inputs in ("clinical", "clinical_phenotype", "all"):
        column = [truth[i][f"bayes_log_ratio_{inputs}"] for i in ids]
        if not all(column):
            continue
        scores = np.array(column, dtype=float)
        low, high = bootstrap_auc(labels, scores)
        rows.append({"bayes_score_of": inputs, "cases": len(ids),
                     "auc_these_cases": round(auc(labels, scores), 4),
                     "auc_95ci": f"{low:.3f}-{high:.3f}",
                     "auc_population": _population_auc(generator, inputs, role)})
    return rows


def _population_auc(generator: dict, inputs: str, role: str) -> float | None:
    """The generator's Bayes AUC of ``inputs`` at the site of ``role`` (a number per site; a
    cohort of an earlier generator has one number for all)."""
    value = generator.get(f"bayes_auc_{inputs}")
    if not isinstance(value, dict):
        return value
    site = next((s for s, r in generator.get("roles", {}).items() if r == role), None)
    return value.get(site)


def evaluate(fit_dirs: list[Path], out: Path) -> dict[str, list[dict]]:
    """Every table and figure into ``out``; returns the tables by name."""
    models = [load_model(Path(d)) for d in fit_dirs]
    truth = generator_truth(models[0])
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict]] = {}
    figures = []
    for number, role in ((2, "internal"), (3, "external")):
        if len(set(models[0].role(role)[0].tolist())) < 2:
            continue   # no such site, or one EGFR group only: no AUC to compute
        tables[f"table{number}_{role}"] = [ensemble_row(m, role) for m in models]
        tables[f"table4_{role}_folds"] = [fold_row(m, role) for m in models]
        tables[f"delong_{role}"] = delong_rows(models, role)
        tables[f"calibration_{role}"] = [{"model": m.name, **row} for m in models
                                         for row in calibration(*m.role(role)[:2])]
        tables[f"decision_curve_{role}"] = _decision_curve(models, role)
        if truth:
            tables[f"bayes_{role}"] = bayes_rows(models[0], role, *truth)
        _figures(models, role, out, synthetic=truth is not None)
        figures.append(role)
    for name, rows in tables.items():
        _write_csv(out / f"{name}.csv", rows)
    (out / "report.md").write_text(_markdown(tables, _preamble(models, truth is not None),
                                             figures))
    return tables


def _preamble(models: list[ModelPredictions], synthetic: bool) -> list[str]:
    """Who was evaluated on what: the models, the sites of each role, and whether the cohort
    is synthetic."""
    lines = [f"Models: {', '.join(m.name for m in models)}."]
    roles = models[0].roles or {}
    if roles:
        lines.append("Sites: " + ", ".join(f"{role.replace('_', '-')} = {site}"
                                          for role, site in roles.items() if site) + ".")
    if synthetic:
        lines.append("**SYNTHETIC cohort** (cdss-train synth-cohort; generator.json beside the "
                     "manifest): these numbers say the training code works, nothing about real "
                     "tumors.")
    return lines


def _decision_curve(models: list[ModelPredictions], role: str) -> list[dict]:
    labels, _, _ = models[0].role(role)
    rows = []
    for t in NET_BENEFIT_THRESHOLDS:
        row = {"threshold": float(t), "treat_all": round(net_benefit(labels, np.ones(len(labels)),
                                                                     t), 4), "treat_none": 0.0}
        for m in models:
            row[m.name] = round(net_benefit(*m.role(role)[:2], t), 4)
        rows.append(row)
    return rows


def _figures(models: list[ModelPredictions], role: str, out: Path, synthetic: bool = False
             ) -> None:
    """Fig. 4 (ROC), calibration (deciles and a logistic calibration curve) and decision
    curves of one role, as PNG, titled with the site and, for a synthetic cohort, marked so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figure, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    lowest = 0.0
    for m in models:
        labels, scores, _ = m.role(role)
        fpr, tpr, _ = roc_curve(labels, scores)
        published = paper.ensemble_auc(m.architecture, role)
        line, = axes[0].plot(fpr, tpr, label=f"{m.name}: AUC {auc(labels, scores):.3f}" + (
            f" (paper {published:.3f})" if published else ""))
        points = calibration(labels, scores)
        axes[1].plot([p["mean_predicted"] for p in points], [p["observed"] for p in points],
                     "o", color=line.get_color(), label=f"{m.name}: deciles")
        axes[1].plot(*calibration_curve(labels, scores), color=line.get_color(),
                     label=f"{m.name}: logistic fit")
        benefit = [net_benefit(labels, scores, t) for t in NET_BENEFIT_THRESHOLDS]
        lowest = min(lowest, *benefit)
        axes[2].plot(NET_BENEFIT_THRESHOLDS, benefit, label=m.name)
    labels = models[0].role(role)[0]
    axes[2].plot(NET_BENEFIT_THRESHOLDS, [net_benefit(labels, np.ones(len(labels)), t)
                                          for t in NET_BENEFIT_THRESHOLDS], "k--", label="all")
    axes[2].axhline(0, color="grey", linewidth=0.8, label="none")
    for ax, title, (x, y) in zip(axes, ("ROC", "Calibration", "Decision curve"),
                                 (("1 - specificity", "sensitivity"),
                                  ("predicted probability", "observed mutant rate"),
                                  ("threshold probability", "net benefit"))):
        ax.set(title=f"{title}, {role} site", xlabel=x, ylabel=y)
        ax.legend(fontsize=8)
    axes[0].plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axes[1].plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axes[2].set_ylim(max(-0.5, lowest - 0.05), max(0.05, float(labels.mean())) + 0.05)
    figure.suptitle(f"{role} site: {', '.join(m.name for m in models)}"
                    + ("  |  SYNTHETIC cohort: not real patients" if synthetic else ""),
                    color="firebrick" if synthetic else "black")
    figure.tight_layout()
    figure.savefig(out / f"figures_{role}.png", dpi=110)
    plt.close(figure)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _markdown(tables: dict[str, list[dict]], preamble: list[str] = (),
              figures: list[str] = ()) -> str:
    """The tables as Markdown (numbers to 4 decimals), after the preamble, with the figures."""
    parts = ["# Evaluation\n", *(f"{line}\n" for line in preamble)]
    parts += [f"![{role}: ROC, calibration, decision curve](figures_{role}.png)\n"
              for role in figures]
    for name, rows in tables.items():
        parts.append(f"## {name}\n")
        if not rows:
            parts.append("(one model: nothing to compare)\n")
            continue
        columns = list(rows[0])
        parts.append("| " + " | ".join(columns) + " |")
        parts.append("|" + "---|" * len(columns))
        parts.extend("| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows)
        parts.append("")
    return "\n".join(parts) + "\n"


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
