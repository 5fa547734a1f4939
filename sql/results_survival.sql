-- Log-rank test of median-split groups per feature (DRF, age, gender, immune marker) on the training set; median survival per group (days), Cox hazard ratio high vs low with 95% CI, Holm over all (Table 2).
CREATE OR REPLACE VIEW results_survival AS SELECT * FROM {{source:results_survival}};
