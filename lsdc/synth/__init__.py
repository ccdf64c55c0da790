"""Synthetic lumbar-spine MRI datasets in the Kaggle RSNA 2024 layout, severity planted in the anatomy.

- ``generate.synth(out_dir, studies, seed, test_studies=0, workers=1)`` writes a dataset (the
  ``lsdc synth`` verb); ``generate.ground_truth(studies, seed, test_studies)`` returns, without
  rendering, each study's ``phantom.StudyAnatomy`` (landmarks in patient mm, severities) and plans;
  ``generate.manifest(...)`` the ``synth_manifest.json`` of planted series quirks (angled per-level
  axial slabs, odd-geometry slices, repeated positions, repeated / missing series types).
- ``phantom``: the parametric spine; ``labels``: the grade model; ``series``: acquisition plans and
  geometry conventions; ``render``: volume painting and slice sampling; ``dicom_write``: files;
  ``tables``: the CSVs.
"""
