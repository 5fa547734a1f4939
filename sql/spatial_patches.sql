-- Biopsy patches of seed 004: one row per biopsy of a patch set, with its gene expression, above-median label and where its patch (biopsy, channel, y, x) sits in the patch set's Zarr array.
CREATE OR REPLACE VIEW spatial_patches AS SELECT * FROM {{source:spatial_patches}};
