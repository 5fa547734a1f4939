-- depends: drf_immune_spearman_all
-- The former name of drf_immune_spearman_all (all patients; not the training-set Fig. 2 of
-- results_spearman), kept so that existing queries still run.
CREATE OR REPLACE VIEW drf_immune_spearman AS SELECT * FROM drf_immune_spearman_all;
