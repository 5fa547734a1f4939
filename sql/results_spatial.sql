-- Held-out accuracy and AUC (95% CIs) of the seed 004 patch classifiers (CNN) and the random-forest baseline on IBSI features of the same patches, per split kind (grouped by patient, or by biopsy for comparison) and evaluation (single 60/20/20 split, or pooled grouped k-fold).
CREATE OR REPLACE VIEW results_spatial AS SELECT * FROM {{source:results_spatial}};
