-- depends: features, feature_catalogue
-- Deep radiomic features, long (seed 000, section 2.3): per patient, sequence, encoder and mask
-- region, each paper41 quantifier averaged over all maps of all layers, plus the four shape
-- features of the region.
CREATE OR REPLACE VIEW drf_long AS
SELECT f.patient_id, f.modality, f.encoder, f.region, f.feature,
       avg(f.value) AS value,
       count(f.value) AS n_maps
FROM features AS f
JOIN feature_catalogue AS c ON c.name = f.feature AND c.paper45
GROUP BY f.patient_id, f.modality, f.encoder, f.region, f.feature;
