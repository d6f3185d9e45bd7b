"""Kim et al. (Sci Rep 2024), the numbers ``cdss-train evaluate`` prints beside its own
(``../shared/PAPER.md``): Tables 2 and 3 (fold ensemble) and Table 4 (per fold, mean ± sd), per
architecture and validation site. A model family the paper did not train (``clinical``) has
none."""

from __future__ import annotations

METRICS = ("accuracy", "precision", "recall", "f1", "auc")
# (architecture, role): accuracy, precision, recall, F1, AUC of the fold ensemble.
ENSEMBLE = {
    ("radiomics-clinical", "internal"): (0.6824, 0.6061, 0.5882, 0.6674, 0.7370),   # Table 2
    ("radiomics-clinical", "external"): (0.6443, 0.4423, 0.7077, 0.6264, 0.7038),
    ("efficientnet-b7", "internal"): (0.7941, 0.7018, 0.6897, 0.7700, 0.8059),      # Table 3
    ("efficientnet-b7", "external"): (0.7644, 0.5986, 0.6538, 0.7266, 0.7760),
    ("resnet34", "internal"): (0.7588, 0.6393, 0.6724, 0.7350, 0.7909),
    ("resnet34", "external"): (0.7413, 0.5592, 0.6538, 0.7055, 0.7679),
    ("densenet264", "internal"): (0.7765, 0.6562, 0.7241, 0.7571, 0.7934),
    ("densenet264", "external"): (0.7067, 0.5080, 0.7808, 0.6840, 0.7802),
}
# (architecture, role): the per-fold AUC, mean ± sd (Table 4; the paper gives it for the
# multimodal models only).
FOLD_AUC = {
    ("efficientnet-b7", "internal"): "0.7977 ± 0.0140",
    ("efficientnet-b7", "external"): "0.7619 ± 0.0168",
    ("resnet34", "internal"): "0.7762 ± 0.0191",
    ("resnet34", "external"): "0.7446 ± 0.0268",
    ("densenet264", "internal"): "0.7861 ± 0.0097",
    ("densenet264", "external"): "0.7602 ± 0.0177",
}


def ensemble_auc(architecture: str, role: str) -> float | None:
    found = ENSEMBLE.get((architecture, role))
    return found[METRICS.index("auc")] if found else None


def ensemble_metrics(architecture: str, role: str) -> str:
    """The paper's five numbers as one cell: accuracy / precision / recall / F1 / AUC."""
    found = ENSEMBLE.get((architecture, role))
    return " / ".join(f"{v:.4f}" for v in found) if found else ""
