"""Spatially resolved deep radiomics (seed 004): patches around biopsy sites, a small ResNet
classifier of above/below-median gene expression, patient-grouped evaluation, and maps of the
predicted probability over the tumour.

Modules, pure core first:

- :mod:`pipelines.spatial.patches`: world mm -> voxel, per-patient intensity normalisation,
  17 x 17 (x channels) patch extraction with checks naming the biopsy, dihedral augmentation.
- :mod:`pipelines.spatial.model`: torch ResNets for (C, 17, 17) inputs (small default and a
  ResNet-50 option).
- :mod:`pipelines.spatial.train`: seeded, deterministic CPU training with BCE, Adam and early
  stopping on a dev split; prediction with test-time augmentation.
- :mod:`pipelines.spatial.evaluate`: patient-grouped and biopsy-level splits, grouped k-fold,
  accuracy and AUC with 95% CIs, random-forest baseline on IBSI features of each patch.
- :mod:`pipelines.spatial.maps`: sliding the model over tumour voxels, Zarr + PNG output,
  Spearman of the map against a ground-truth field.
- :mod:`pipelines.spatial.stage`: lake stages (read, log runs, write tables).
- :mod:`pipelines.spatial.cli`: the ``drlake spatial`` commands.
"""

#: the nine co-registered sequences of the seed's cohort, in channel order
SEQUENCES = ("T1", "T1Gd", "T2", "FLAIR", "FA", "MD", "EPI", "rCBV", "nrCBV")

#: the seed paper's held-out test figures (random 60/20/20 biopsy split, n_test = 30)
SEED_REFERENCE = {"accuracy": 0.5667, "auc": 0.5136, "n_test": 30, "n_biopsies": 150,
                  "n_patients": 45}
