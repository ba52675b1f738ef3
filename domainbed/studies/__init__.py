"""Our studies: the drivers behind ./reproduce.sh and docs/studies.md, above the library.

`reproduce` (the main job: presets, the digits suite, its tables, ablation and learning
curves), `iut_suite` (the invariance unit tests: sweeps, selection, the table beside the
published anchors), `iut_diagnostics` (the premise's diagnostics on the selected models,
plots), `iut_results` (what those two share: problems, methods, anchors, error summaries),
`hparam_study` (one-at-a-time hparam studies paired with ERM), `benchmark` (step timings,
one run's costs). Each has a `main`, run by `python -m domainbed.scripts.<name>`.
"""
