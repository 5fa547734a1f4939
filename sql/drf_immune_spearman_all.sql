-- depends: drf_long, immune_markers, macros
-- Spearman correlation of every DRF with every immune marker (seed 000, Fig. 2), average ranks
-- for ties, per encoder and mask region; p_holm is Holm-adjusted over the whole heatmap of one
-- encoder and region.
-- ALL PATIENTS: this view correlates every patient of the lake who has DRFs and markers. It is
-- not the analyze stage's Fig. 2: results_spearman (and the paper) use the training set of the
-- train/test split only, so their rho, p and p_holm differ from these. Use results_spearman to
-- reproduce the report; use this view to explore the whole lake.
CREATE OR REPLACE VIEW drf_immune_spearman_all AS
WITH pairs AS (
    SELECT d.encoder, d.region, d.modality, d.feature, m.marker, d.value AS x, m.value AS y
    FROM drf_long AS d JOIN immune_markers AS m USING (patient_id)
    WHERE d.value IS NOT NULL AND m.value IS NOT NULL AND isfinite(d.value)
), ranked AS (
    SELECT encoder, region, modality, feature, marker,
        rank() OVER (PARTITION BY encoder, region, modality, feature, marker ORDER BY x)
          + (count(*) OVER (PARTITION BY encoder, region, modality, feature, marker, x) - 1) / 2.0 AS rx,
        rank() OVER (PARTITION BY encoder, region, modality, feature, marker ORDER BY y)
          + (count(*) OVER (PARTITION BY encoder, region, modality, feature, marker, y) - 1) / 2.0 AS ry
    FROM pairs
), rho AS (
    SELECT encoder, region, modality, feature, marker, count(*) AS n, corr(rx, ry) AS rho
    FROM ranked GROUP BY ALL
), tested AS (
    SELECT *, spearman_p(rho, n) AS p FROM rho
)
SELECT * EXCLUDE (holm_i, holm_m),
    CASE WHEN p IS NULL THEN NULL ELSE
        least(1.0, max((holm_m - holm_i + 1) * p) OVER (
            PARTITION BY encoder, region ORDER BY holm_i
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    END AS p_holm
FROM (
    SELECT *,
        row_number() OVER (PARTITION BY encoder, region ORDER BY p NULLS LAST) AS holm_i,
        count(p) OVER (PARTITION BY encoder, region) AS holm_m
    FROM tested
);
