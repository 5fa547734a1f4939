"""Pure statistics of drlake (seed 000): DataFrames and arrays in, DataFrames and small result
objects out; no I/O, no lake, no paths. Survival times are in days, events are 1 = death.

- :mod:`.multiple_testing`: Holm-Bonferroni adjustment.
- :mod:`.association`: median splits, Spearman and Wilcoxon rank-sum heatmaps.
- :mod:`.survival`: log-rank / Kaplan-Meier (R's median by default) / Cox (agreeing with R's
  coxph) of median-split groups, censored imputation, short/long survival labels.
- :mod:`.classify`: random forests with LOOCV, a split, repeated stratified k-fold or out-of-bag
  predictions, AUC confidence intervals and caveats, survival of predicted groups.
- :mod:`.splits`: reproducible train/test splits and leave-one-out folds.
"""

from pipelines.stats.association import (
    MedianSplit,
    median_split,
    spearman_matrix,
    split_at,
    wilcoxon_groups,
)
from pipelines.stats.classify import (
    ClassifierResult,
    ScoreSurvivalResult,
    auc_caveat,
    auc_ci,
    delong_auc_variance,
    median_labeller,
    rf_loocv,
    rf_oob,
    rf_repeated_cv,
    rf_split,
    score_group_survival,
)
from pipelines.stats.multiple_testing import holm_adjust
from pipelines.stats.splits import loo_folds, train_test_split_ids
from pipelines.stats.survival import (
    LogrankResult,
    category_groups,
    cox_hazard_ratio,
    impute_censored_survival,
    km_median,
    logrank_median_split,
    survival_labeller,
    survival_labels,
    survival_table,
)

__all__ = [
    "ClassifierResult",
    "LogrankResult",
    "MedianSplit",
    "ScoreSurvivalResult",
    "auc_caveat",
    "auc_ci",
    "category_groups",
    "cox_hazard_ratio",
    "delong_auc_variance",
    "holm_adjust",
    "impute_censored_survival",
    "km_median",
    "logrank_median_split",
    "loo_folds",
    "median_labeller",
    "median_split",
    "rf_loocv",
    "rf_oob",
    "rf_repeated_cv",
    "rf_split",
    "score_group_survival",
    "spearman_matrix",
    "split_at",
    "survival_labeller",
    "survival_labels",
    "survival_table",
    "train_test_split_ids",
    "wilcoxon_groups",
]
