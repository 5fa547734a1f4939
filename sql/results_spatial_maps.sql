-- Probability maps of a seed 004 patch classifier over a patient's tumour (Zarr) and their PNG overlays, with the Spearman correlation of the map against a ground-truth field inside the tumour when one was given.
CREATE OR REPLACE VIEW results_spatial_maps AS SELECT * FROM {{source:results_spatial_maps}};
