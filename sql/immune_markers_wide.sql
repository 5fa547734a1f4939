-- depends: immune_markers
-- Immune markers, wide: one row per patient, one column per marker.
CREATE OR REPLACE VIEW immune_markers_wide AS
PIVOT immune_markers ON marker USING first(value) GROUP BY patient_id;
