"""Diagnostics of FGMix's premise on the invariance unit tests (ground truth known).

For the model that training-domain validation selected in each (environments, problem,
algorithm, data seed) cell (its final weights, `model.pkl`), measured in the problem's
unscrambled basis (x = x' Qᵀ, where the network sees x' = x Q):

* `w_inv`: the share of the linear classifier's squared weight norm (logit difference,
  w = Q (W₁ − W₀)) on the invariant block. 1 = invariant features only; the spurious
  block has the same number of coordinates, so 0.5 is "no preference" in count.
* `m_inv` (FGMix, FGMixV1): the share of the learned metric's trace on the invariant block,
  M = Q diag(m) Qᵀ; it starts at 0.5 (m = 1).
* On a batch of 512 training samples per environment (a fixed random subset), for the
  mixing variants:
  - `corr`: rank correlation, over anchors, between an instance's compatibility score (its
    mean gradient cosine to the other members of its group; version 2: to its class's
    summed gradients in the other domains) and the share of its head gradient on the
    invariant block, ‖x_inv‖² / (‖x‖² + 1) (the gradient-weighted variants);
  - `minority` (Example2): mean compatibility of the instances whose background disagrees
    with their animal minus that of the others: positive when the policy favours the
    instances that carry the invariant rule against the spurious one;
  - `extrap`: the share of groups with a negative weight;
  - `away_spu` / `to_inv`: over groups, the share where the weights move the mixed point,
    relative to the members' plain average, against the label's spurious direction
    (resp. along its invariant direction); directions are the class-mean differences of
    each block in the batch. Random weights give about 0.5.
Only linear models (`vector_featurizer` "linear") are measured.
"""
import os

import numpy as np

from domainbed.lib.plots import MatplotlibMissing
from domainbed.studies.iut_results import ALGORITHMS, ORACLE, summarise

MIXING = ["InterpMix", "ExtrapMix", "GMix", "FGMixV1", "AntiGMix", "ExtrapMix2", "GMix2",
          "FGMixV2", "ShuffleMix3", "GMix3", "FGMix"]
BATCH_PER_ENV = 512
MINORITY_GROUPS = (1, 3)   # Example2: (cow, sand) and (camel, grass)


def _ranks(values):
    """Ranks from 0, ties sharing their average rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def rank_correlation(a, b):
    a, b = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class ProblemCache:
    """Datasets rebuilt once per (dataset, problem hparams, data seed)."""

    def __init__(self):
        self._cache = {}

    def get(self, dataset_name, hparams, trial_seed):
        from domainbed import datasets

        key = (dataset_name, trial_seed, tuple(sorted(
            (k, v) for k, v in hparams.items() if k.startswith("iut_"))))
        if key not in self._cache:
            cls = datasets.get_dataset_class(dataset_name)
            test_env = cls.test_env(hparams)
            self._cache[key] = cls(None, [test_env], hparams, trial_seed=trial_seed)
        return self._cache[key]


def load_algorithm(job_dir, record):
    import torch

    from domainbed.algorithms import get_algorithm_class

    path = os.path.join(job_dir, "model.pkl")
    if not os.path.exists(path):
        return None
    dump = torch.load(path, map_location="cpu", weights_only=False)
    algorithm_class = get_algorithm_class(dump["args"]["algorithm"])
    algorithm = algorithm_class(dump["model_input_shape"], dump["model_num_classes"],
                                dump["model_num_domains"], dump["model_hparams"])
    algorithm.load_state_dict(dump["model_dict"])
    algorithm.eval()
    return algorithm


def weight_share(algorithm, scramble, dim_inv):
    weight = algorithm.classifier.weight.detach().double().numpy()
    direction = scramble @ (weight[1] - weight[0])
    total = float((direction ** 2).sum())
    return float((direction[:dim_inv] ** 2).sum()) / total if total > 0 else float("nan")


def metric_share(algorithm, scramble, dim_inv):
    import torch.nn.functional as F

    m = F.softplus(algorithm.policy_omega.detach()).double().numpy()
    metric = scramble @ np.diag(m) @ scramble.T
    return float(np.trace(metric[:dim_inv, :dim_inv]) / np.trace(metric))


def class_direction(values, y):
    direction = values[y == 1].mean(0) - values[y == 0].mean(0)
    norm = np.linalg.norm(direction)
    return direction / norm if norm > 0 else direction


def mixing_diagnostics(algorithm, dataset, dim_inv):
    """The batch-level diagnostics of one mixing model (see the module docstring)."""
    import torch

    from domainbed.algorithms import fgmix

    n_train = dataset.problem_config.n_envs
    # A fixed random subset of each environment (Example3 stores class 0 first).
    picks = [torch.as_tensor(np.random.RandomState(e).permutation(len(env))[:BATCH_PER_ENV])
             for e, env in enumerate(dataset.datasets[:n_train])]
    minibatches = [(env.tensors[0][pick], env.tensors[1][pick])
                   for env, pick in zip(dataset.datasets[:n_train], picks)]
    result = {}
    with torch.no_grad():
        x, y, domains = fgmix.concat_with_domains(minibatches)
        z = algorithm.featurizer(x)
        logits = algorithm.classifier(z)
        groups = algorithm._draw_groups(y, domains, n_train, z.dtype)
        signature = (fgmix.gradient_signature(algorithm.classifier, z, logits, y)
                     if algorithm.weight_rule.reads_gradients else None)
        weights = algorithm._mixing(y, domains, groups, signature).weights
        index, mask, valid = groups.index, groups.mask, groups.valid.bool()
        x_orig = (x.double() @ torch.as_tensor(dataset.scramble).T).numpy()
        labels = y.numpy()
        result["extrap"] = float(((weights < 0) & mask).any(1)[valid].float().mean())
        # The compatibilities are read for the direction (versions 1, 2) or, in version 3,
        # for the amounts whatever the direction.
        if signature is not None and (algorithm.SCORES != "random"
                                      or algorithm.weight_rule.has_amounts):
            anchor = anchor_compatibility(algorithm, signature, y, domains, groups).numpy()
            keep = valid.numpy()
            inv_share = (x_orig[:, :dim_inv] ** 2).sum(1) / ((x_orig ** 2).sum(1) + 1.0)
            result["corr"] = rank_correlation(anchor[keep], inv_share[keep])
            if dataset.groups[0] is not None:
                groups_of = np.concatenate([g[pick.numpy()] for g, pick
                                            in zip(dataset.groups[:n_train], picks)])
                minority = np.isin(groups_of, MINORITY_GROUPS) & keep
                majority = ~np.isin(groups_of, MINORITY_GROUPS) & keep
                if minority.any() and majority.any():
                    result["minority"] = float(anchor[minority].mean() - anchor[majority].mean())
        uniform = mask.double() / mask.sum(1, keepdim=True).double()
        members = torch.as_tensor(x_orig)[index]
        shift = (torch.einsum("gk,gkf->gf", weights.double(), members)
                 - torch.einsum("gk,gkf->gf", uniform, members)).numpy()[valid.numpy()]
        sign = (2 * labels - 1)[valid.numpy()]
        spu_dir = class_direction(x_orig[:, dim_inv:], labels)
        inv_dir = class_direction(x_orig[:, :dim_inv], labels)
        moved = np.abs(shift).sum(1) > 1e-12
        if moved.any():
            result["away_spu"] = float((sign * (shift[:, dim_inv:] @ spu_dir) < 0)[moved].mean())
            result["to_inv"] = float((sign * (shift[:, :dim_inv] @ inv_dir) > 0)[moved].mean())
    return result


def anchor_compatibility(algorithm, signature, y, domains, groups):
    """Each instance's own compatibility score, as its variant computes it."""
    import torch

    from domainbed.algorithms import fgmix
    from domainbed.algorithms import per_sample

    features, residuals = signature[:2]
    # Versions 2 and 3: one cross-domain score per instance.
    if isinstance(algorithm.weight_rule, (fgmix.DirectedWeights, fgmix.AmountWeights)):
        cosine = per_sample.head_gradient_cosine(features, residuals, algorithm._metric())
        return fgmix.cross_domain_compatibility(cosine, y, domains, groups.mask.shape[1],
                                                algorithm.num_classes)
    cosine = per_sample.grouped_head_gradient_cosine(features, residuals, groups.index,
                                                     algorithm._metric())
    compat = fgmix.mean_compatibility(cosine, groups.mask)
    return compat[torch.arange(len(y)), domains]


def measure_cell(job_dir, record, algorithm_name, cache):
    hparams = record["hparams"]
    if hparams.get("vector_featurizer", "linear") != "linear":
        return {}
    algorithm = load_algorithm(job_dir, record)
    if algorithm is None:
        return {}
    dataset = cache.get(record["args"]["dataset"], hparams, record["args"]["trial_seed"])
    dim_inv = dataset.problem_config.dim_inv
    measured = {"w_inv": weight_share(algorithm, dataset.scramble, dim_inv)}
    if hasattr(algorithm, "policy_omega"):   # a learned metric
        measured["m_inv"] = metric_share(algorithm, dataset.scramble, dim_inv)
    if algorithm_name in MIXING:
        measured.update(mixing_diagnostics(algorithm, dataset, dim_inv))
    return measured


def collect(cells, sweep_dir):
    """{(n_envs, problem, algorithm): {diagnostic: summary over data seeds}}."""
    cache = ProblemCache()
    out = {}
    for (n_envs, problem, algorithm), entries in sorted(cells.items()):
        values = {}
        for _, _, run_records in entries:
            record = run_records[0]
            job_dir = os.path.join(sweep_dir, os.path.basename(record["args"]["output_dir"]))
            for name, value in measure_cell(job_dir, record, algorithm, cache).items():
                if value == value:  # not NaN
                    values.setdefault(name, []).append(value)
        if values:
            out[(n_envs, problem, algorithm)] = {k: summarise(v) for k, v in values.items()}
    return out


def format_weight_table(diagnostics):
    columns = [a for a in ALGORITHMS + [ORACLE]
               if any(key[2] == a for key in diagnostics)]
    width = max([10] + [len(c) + 2 for c in columns])   # a space between any two names
    rows = sorted({(n, p) for n, p, _ in diagnostics})
    lines = ["-------- Share of the selected linear classifier's squared weight on the invariant "
             "block (1 = invariant only; mean over data seeds)",
             f"{'envs':<5}{'problem':<11}" + "".join(f"{c:>{width}}" for c in columns)]
    for n_envs, problem in rows:
        cells = []
        for algorithm in columns:
            summary = diagnostics.get((n_envs, problem, algorithm), {}).get("w_inv")
            cells.append(f"{summary['mean']:.2f}" if summary else "-")
        lines.append(f"{n_envs:<5}{problem:<11}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


MIXING_COLUMNS = ["m_inv", "corr", "minority", "extrap", "away_spu", "to_inv"]


def format_mixing_table(diagnostics):
    lines = ["-------- Mixing diagnostics (mean +/- s.e. over data seeds; see "
             "domainbed/scripts/iut_diagnostics.py)",
             f"{'envs':<5}{'problem':<11}{'algorithm':<11}"
             + "".join(f"{c:>13}" for c in MIXING_COLUMNS)]
    for (n_envs, problem, algorithm), values in sorted(diagnostics.items()):
        if algorithm not in MIXING:
            continue
        cells = [f"{values[c]['mean']:+.2f}+/-{values[c]['se']:.2f}" if c in values else "-"
                 for c in MIXING_COLUMNS]
        lines.append(f"{n_envs:<5}{problem:<11}{algorithm:<11}" + "".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def plot(cells, diagnostics, out_dir):
    """iut_errors.png (test error against environments) and iut_diagnostics.png."""
    from domainbed.lib import plots
    from domainbed.studies.iut_results import error_table

    table = error_table(cells)
    algorithms = [a for a in ALGORITHMS + [ORACLE] if any(a in row for row in table.values())]
    paths = [plots.save_figure(errors_figure(table, algorithms),
                               os.path.join(out_dir, "iut_errors.png"))]
    if diagnostics:
        paths.append(plots.save_figure(diagnostics_figure(diagnostics, algorithms),
                                       os.path.join(out_dir, "iut_diagnostics.png")))
    return paths


PUBLISHED_LABEL = "published (Aubin et al.\n2021): x, method's colour"


def errors_figure(table, algorithms):
    """A panel per problem: test error against the training environments, a series per
    method (mean +/- s.e.), the published means as crosses in the method's colour."""
    from domainbed.lib import plots
    from domainbed.studies.iut_results import PUBLISHED, PUBLISHED_METHODS

    plt = plots.require_matplotlib()
    problems = sorted({p for _, p in table}, key=lambda p: (p.rstrip("s"), p))
    figure, axes = plots.panel_grid(plt, len(problems), columns=2, panel_size=(3.6, 2.7))
    sizes = sorted({n for n, _ in table})
    dodge = 0.025 * max(sizes[-1] - sizes[0], 2)   # methods side by side at each size
    lows, highs = [], []
    for axis, problem in zip(axes, problems):
        for i, algorithm in enumerate(algorithms):
            points = sorted((n, row[algorithm]) for (n, p), row in table.items()
                            if p == problem and algorithm in row)
            if not points:
                continue
            means = [s["mean"] for _, s in points]
            errors = [s["se"] if s["se"] == s["se"] else 0.0 for _, s in points]
            axis.errorbar([n + dodge * (i - (len(algorithms) - 1) / 2) for n, _ in points],
                          means, yerr=errors, markersize=4, capsize=2, linewidth=1,
                          label=algorithm, **plots.series_style(i))
            lows += [m - e for m, e in zip(means, errors)]
            highs += [m + e for m, e in zip(means, errors)]
        for method, i in ((m, algorithms.index(m)) for m in PUBLISHED_METHODS if m in algorithms):
            points = sorted((n, values[PUBLISHED_METHODS.index(method)][0])   # where we ran
                            for (n, p), values in PUBLISHED.items()
                            if p == problem and (n, p) in table)
            if points:
                axis.plot([n + dodge * (i - (len(algorithms) - 1) / 2) for n, _ in points],
                          [v for _, v in points], "x", markersize=6,
                          color=plots.series_style(i)["color"],
                          label=PUBLISHED_LABEL)
                highs += [v for _, v in points]
                lows += [v for _, v in points]
        axis.set_title(problem)
        axis.set_xlabel("training environments")
        axis.set_xticks(sorted({n for n, p in table if p == problem}))
        axis.grid(linewidth=0.3)
    axes[0].set_ylim(*plots.fitted_limits(lows, highs))
    for axis in axes[::2]:
        axis.set_ylabel("test error")
    figure.tight_layout()
    plots.figure_legend_outside(figure, axes, last=[PUBLISHED_LABEL])
    return figure


def diagnostics_figure(diagnostics, algorithms):
    """Two stacked panels over (problem, environments): the classifier's weight share on the
    invariant block per method, and the share of mixed groups pushed against the spurious
    direction per mixing method; a method keeps its colour and marker in both."""
    from domainbed.lib import plots

    plt = plots.require_matplotlib()
    labels = sorted({(n, p) for n, p, _ in diagnostics})
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.55 * len(labels) + 3), 6.2),
                                         sharex=True)
    panels = ((top, algorithms, "w_inv", "weight share on\ninvariant block"),
              (bottom, [a for a in MIXING if a in algorithms], "away_spu",
               "share of groups pushed\nagainst spurious"))
    for axis, names, key, ylabel in panels:
        width = 0.8 / max(len(names), 1)
        for j, algorithm in enumerate(names):
            points = [(x, diagnostics[(n, p, algorithm)][key]) for x, (n, p) in enumerate(labels)
                      if key in diagnostics.get((n, p, algorithm), {})]
            if points:
                axis.errorbar([x + (j - (len(names) - 1) / 2) * width for x, _ in points],
                              [s["mean"] for _, s in points],
                              yerr=[s["se"] if s["se"] == s["se"] else 0.0 for _, s in points],
                              linestyle="none", markersize=4, capsize=1.5, label=algorithm,
                              **plots.series_style(algorithms.index(algorithm)))
        axis.set_ylabel(ylabel)
        axis.grid(axis="y", linewidth=0.3)
    bottom.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="random weights")
    bottom.set_xticks(range(len(labels)))
    bottom.set_xticklabels([f"{p}\n{n} envs" for n, p in labels], rotation=90)
    bottom.set_xlabel("problem, training environments")
    figure.tight_layout()
    plots.figure_legend_outside(figure, [top, bottom])
    return figure


def run(cells, output_dir):
    """Measure, print both tables, write the plots; returns a JSON-able summary."""
    diagnostics = collect(cells, os.path.join(output_dir, "sweep"))
    if diagnostics:
        print()
        print(format_weight_table(diagnostics))
        print()
        print(format_mixing_table(diagnostics))
    try:
        paths = plot(cells, diagnostics, output_dir)
        print("\nPlots: " + ", ".join(paths))
    except MatplotlibMissing as error:  # the tables stand
        print(f"\nPlots skipped: {error}")
    return {f"{n}/{p}/{a}": values for (n, p, a), values in diagnostics.items()}
