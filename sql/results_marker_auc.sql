-- Random-forest AUC of predicting below/above-median immune markers from one sequence's 45 DRFs, leave-one-out and split, with the most important feature (Fig. 5).
CREATE OR REPLACE VIEW results_marker_auc AS SELECT * FROM {{source:results_marker_auc}};
