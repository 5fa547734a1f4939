-- Gene expression, long format: one row per sample and gene. Samples are patients (bulk tumour) or biopsies.
CREATE OR REPLACE VIEW genomic_expression AS SELECT * FROM {{source:genomic_expression}};
