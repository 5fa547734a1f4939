-- Immune-cell markers per patient, long format: CIBERSORT fractions times leukocyte fraction (seed 000, section 2.1).
CREATE OR REPLACE VIEW immune_markers AS SELECT * FROM {{source:immune_markers}};
