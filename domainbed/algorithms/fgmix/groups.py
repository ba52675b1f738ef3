"""§2 of docs/method.md: mixing groups, an anchor plus one same-label instance from every
other domain, drawn without a Python loop over instances."""
import collections

import torch


Groups = collections.namedtuple("Groups", "index mask valid draws keys", defaults=(None,))
Groups.__doc__ = """One group per anchor instance.

index [N, D]: column d holds the member from domain d (the anchor sits in its own
domain's column and fills the columns of absent members); mask [N, D]: real members;
valid [N]: 1.0 for groups of two or more members (groups of one are masked out of the
loss); draws [N, D]: Gamma(α) draws for the Dirichlet variants, standard normal scores
for the random-direction ones, else None; keys [N]: uniform draws that shuffle version 3's
amounts across groups (the information control), else None."""


def concat_with_domains(minibatches):
    """All inputs, labels, and the index of the domain each instance comes from."""
    x = torch.cat([xi for xi, _ in minibatches])
    y = torch.cat([yi for _, yi in minibatches])
    domains = torch.cat([torch.full_like(yi, d) for d, (_, yi) in enumerate(minibatches)])
    return x, y, domains


def build_groups(y, domains, num_domains, num_classes, uniform):
    """One group per anchor instance: itself, plus one instance of each other domain
    drawn uniformly among those with the anchor's label (`uniform` [N, D] in [0, 1)).

    Returns (index, mask) as in `Groups`. A domain without the label is left out. No
    Python loop over instances: instances are sorted by (domain, label) cell and each
    draw is an offset in a cell.
    """
    n = y.shape[0]
    cell_of_instance = domains * num_classes + y
    order = torch.argsort(cell_of_instance, stable=True)
    # Not bincount: on CUDA it reads the largest value back to size its output, a
    # host-device synchronisation in the middle of the step (the GPU idles meanwhile).
    counts = torch.zeros(num_domains * num_classes, dtype=torch.long, device=y.device) \
        .scatter_add_(0, cell_of_instance, torch.ones_like(cell_of_instance))
    starts = torch.cumsum(counts, 0) - counts

    domain_ids = torch.arange(num_domains, device=y.device)
    cell = domain_ids.unsqueeze(0) * num_classes + y.unsqueeze(1)
    n_in_cell = counts.take(cell)
    # min() guards against float rounding of uniform · count up to count itself.
    offset = torch.minimum((uniform * n_in_cell).long(), (n_in_cell - 1).clamp(min=0))
    drawn = order.take((starts.take(cell) + offset).clamp(max=n - 1))

    mask = n_in_cell > 0
    own_domain = domains.unsqueeze(1) == domain_ids.unsqueeze(0)
    anchors = torch.arange(n, device=y.device).unsqueeze(1).expand(n, num_domains)
    index = torch.where(own_domain | ~mask, anchors, drawn)
    return index, mask
