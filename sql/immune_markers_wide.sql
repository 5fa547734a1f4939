-- depends: immune_markers
-- Immune markers, wide: one row per patient, one column per marker.
CREATE OR REPLACE VIEW immune_markers_wide AS
SELECT patient_id,
    {{pivot_columns:immune_markers:marker:value}}
FROM immune_markers
GROUP BY patient_id;
