"""What the invariance unit-test suite and its diagnostics share: the problems, the
methods, the published anchors (Aubin et al. 2021) and the test-error summaries
(`summarise`: the results package's mean, standard deviation and standard error)."""
from domainbed.results.paired import summarise

PROBLEMS = ["IUTExample2", "IUTExample2s", "IUTExample3", "IUTExample3s"]
N_ENVS = [3, 6, 10]
ALGORITHMS = ["ERM", "IRM", "IGA", "ANDMask", "Mixup", "InterpMix", "ExtrapMix", "GMix",
              "FGMixV1", "AntiGMix", "ExtrapMix2", "GMix2", "ShuffleMix3", "GMix3",
              "FGMix"]
ORACLE = "Oracle"

# Published test errors, mean and standard deviation over 50 data seeds (d_inv = d_spu = 5,
# linear models, full-batch Adam, 20 hparam draws, training-domain validation).
PUBLISHED_METHODS = ["ERM", "IRM", "IGA", "ANDMask", ORACLE]
PUBLISHED = {
    (3, "Example2"): [(0.42, 0.01), (0.45, 0.01), (0.45, 0.01), (0.44, 0.02), (0.00, 0.00)],
    (3, "Example2s"): [(0.45, 0.01), (0.45, 0.01), (0.45, 0.01), (0.45, 0.01), (0.00, 0.00)],
    (3, "Example3"): [(0.48, 0.07), (0.49, 0.07), (0.47, 0.09), (0.34, 0.22), (0.01, 0.00)],
    (3, "Example3s"): [(0.49, 0.06), (0.49, 0.07), (0.49, 0.06), (0.47, 0.08), (0.01, 0.00)],
    (6, "Example2"): [(0.37, 0.06), (0.46, 0.01), (0.09, 0.17), (0.40, 0.07), (0.00, 0.00)],
    (6, "Example2s"): [(0.46, 0.01), (0.46, 0.01), (0.46, 0.01), (0.46, 0.01), (0.00, 0.00)],
    (6, "Example3"): [(0.33, 0.18), (0.14, 0.18), (0.29, 0.19), (0.10, 0.18), (0.01, 0.00)],
    (6, "Example3s"): [(0.36, 0.19), (0.14, 0.18), (0.37, 0.19), (0.50, 0.09), (0.01, 0.00)],
    (10, "Example2"): [(0.35, 0.06), (0.47, 0.03), (0.01, 0.07), (0.38, 0.07), (0.00, 0.00)],
    (10, "Example3"): [(0.15, 0.19), (0.01, 0.00), (0.13, 0.17), (0.01, 0.00), (0.01, 0.00)],
}


def problem_name(dataset):
    return dataset[len("IUT"):] if dataset.startswith("IUT") else dataset


def error_table(cells):
    """{(n_envs, problem): {algorithm: summary}} in N_ENVS / PROBLEMS order."""
    table = {}
    for (n_envs, problem, algorithm), entries in cells.items():
        table.setdefault((n_envs, problem), {})[algorithm] = summarise([e for _, e, _ in entries])
    return dict(sorted(table.items(), key=lambda item: (
        item[0][0], [problem_name(p) for p in PROBLEMS].index(item[0][1])
        if item[0][1] in [problem_name(p) for p in PROBLEMS] else 99)))
