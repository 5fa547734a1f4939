-- Feature importances of the survival classifiers: impurity (mean over folds) and permutation (drop in AUC) (Fig. 4d).
CREATE OR REPLACE VIEW results_importance AS SELECT * FROM {{source:results_importance}};
