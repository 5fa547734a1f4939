-- depends: drf_long
-- The DRF table: one row per patient and encoder, 45 features per sequence named
-- "<SEQUENCE>__<feature>" (180 columns for four sequences).
CREATE OR REPLACE VIEW drf AS
SELECT patient_id, encoder,
    {{drf_columns}}
FROM drf_long
GROUP BY patient_id, encoder;
