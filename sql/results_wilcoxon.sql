-- Wilcoxon rank-sum (Mann-Whitney U) of each DRF between below/above-median groups of each marker, training set (Fig. 3); Holm over all together.
CREATE OR REPLACE VIEW results_wilcoxon AS SELECT * FROM {{source:results_wilcoxon}};
