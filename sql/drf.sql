-- depends: drf_long
-- The DRF table: one row per patient, encoder and mask region (core, whole, ...; 'roi' for a
-- binary mask), 45 features per sequence named "<SEQUENCE>__<feature>" (180 columns for four
-- sequences). Take one region with WHERE region = '...'.
CREATE OR REPLACE VIEW drf AS
SELECT patient_id, encoder, region,
    {{drf_columns}}
FROM drf_long
GROUP BY patient_id, encoder, region;
