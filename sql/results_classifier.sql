-- Random-forest classification of short vs long survival per feature set (R, C, I and unions): AUC with 95% CI for leave-one-out (pooled) and the single split; Spearman of score vs survival; log-rank and HR of the predicted groups (Fig. 4).
CREATE OR REPLACE VIEW results_classifier AS SELECT * FROM {{source:results_classifier}};
