-- Stereotactic biopsy sites (seed 004): world coordinates in mm in the patient's image space (ITK/LPS physical space).
CREATE OR REPLACE VIEW biopsies AS SELECT * FROM {{source:biopsies}};
