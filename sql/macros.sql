-- Reusable analysis macros (plain SQL; spearman_p is a scalar function drlake registers).
--
-- holm_adjust('relation'): every row of a relation with a column p, plus p_holm, the
-- Holm-Bonferroni adjusted p-value over all its rows together (rows with a NULL p keep NULL and
-- do not count in m). Matches statsmodels' multipletests(method="holm").
CREATE OR REPLACE MACRO holm_adjust(t) AS TABLE
SELECT * EXCLUDE (holm_i, holm_m),
    CASE WHEN p IS NULL THEN NULL ELSE
        least(1.0, max((holm_m - holm_i + 1) * p) OVER (
            ORDER BY holm_i ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    END AS p_holm
FROM (
    SELECT *, row_number() OVER (ORDER BY p NULLS LAST) AS holm_i, count(p) OVER () AS holm_m
    FROM query_table(t)
);

-- spearman_by('relation'): Spearman's rho of y against x within each value of `key`, with
-- average ranks for ties (as scipy.stats.spearmanr), pairwise-complete rows, n and the
-- two-sided p-value of the t approximation (scipy's).
CREATE OR REPLACE MACRO spearman_by(t) AS TABLE
WITH pairs AS (
    SELECT "key", x, y FROM query_table(t) WHERE x IS NOT NULL AND y IS NOT NULL
), ranked AS (
    SELECT "key",
        rank() OVER (PARTITION BY "key" ORDER BY x)
            + (count(*) OVER (PARTITION BY "key", x) - 1) / 2.0 AS rx,
        rank() OVER (PARTITION BY "key" ORDER BY y)
            + (count(*) OVER (PARTITION BY "key", y) - 1) / 2.0 AS ry
    FROM pairs
)
SELECT "key", count(*) AS n, corr(rx, ry) AS rho, spearman_p(corr(rx, ry), count(*)) AS p
FROM ranked
GROUP BY "key";
