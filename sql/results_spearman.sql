-- Spearman correlation of each DRF with each immune marker on the training set (seed 000 Fig. 2); p_holm over the whole heatmap.
CREATE OR REPLACE VIEW results_spearman AS SELECT * FROM {{source:results_spearman}};
