"""Domain-adversarial training.

- DANN: Ganin et al., JMLR 2016. A discriminator predicts the domain from the features;
  the featurizer learns to fool it while classifying well.
- CDANN: conditional DANN (Li et al., ECCV 2018). The discriminator also sees the class
  (through a learned class embedding added to the features) and its loss is class-balanced,
  so it aligns the class-conditional feature distributions.
- URM: Krishnamachari et al., TMLR 2024 (at the end of this module). Its discriminator tells
  the features from uniform noise.

In DANN and CDANN, discriminator and generator steps alternate: with a counter c incremented
before each update, update c is a discriminator step when c mod (1 + d_steps_per_g_step) <
d_steps_per_g_step, otherwise a generator step.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import concat_minibatches
from domainbed.algorithms.registry import register_algorithm


def domain_labels(minibatches, device):
    """The index of each sample's minibatch (= training domain), in concatenation order."""
    return torch.cat([torch.full((len(x),), i, dtype=torch.int64, device=device)
                      for i, (x, _) in enumerate(minibatches)])


def class_balanced_weights(y):
    """1 / (count[y] * n_classes), summing to 1 over the batch when every class occurs.

    n_classes is max(y) + 1, as upstream (F.one_hot without num_classes).
    """
    counts = F.one_hot(y).sum(dim=0)
    return 1.0 / (counts[y] * counts.shape[0]).float()


class _AbstractDANN(Algorithm):
    CONDITIONAL = False
    CLASS_BALANCE = False

    @staticmethod
    def declare_hparams(hparam, dataset):
        # The generator's and discriminator's optimizers draw like the dataset's lr and
        # weight_decay (upstream: the same distributions).
        hparam("lr_g", *dataset.lr)
        hparam("lr_d", *dataset.lr)
        hparam("weight_decay_g", *dataset.weight_decay)
        hparam("lambda", 1.0, lambda r: 10**r.uniform(-2, 2))
        hparam("weight_decay_d", 0.0, lambda r: 10**r.uniform(-6, -2))
        hparam("d_steps_per_g_step", 1, lambda r: int(2**r.uniform(0, 3)))
        hparam("grad_penalty", 0.0, lambda r: 10**r.uniform(-2, 1))
        hparam("beta1", 0.5, lambda r: r.choice([0.0, 0.5]))
        hparam("mlp_width", 256, lambda r: int(2**r.uniform(6, 10)))
        hparam("mlp_depth", 3, lambda r: int(r.choice([3, 4, 5])))
        hparam("mlp_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))
        self.featurizer = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer.n_outputs
        self.classifier = networks.Classifier(
            n_features, num_classes, hparams["nonlinear_classifier"])
        self.discriminator = networks.MLP(n_features, num_domains, hparams)
        self.class_embeddings = nn.Embedding(num_classes, n_features)
        betas = (hparams["beta1"], 0.9)
        self.disc_opt = torch.optim.Adam(
            list(self.discriminator.parameters()) + list(self.class_embeddings.parameters()),
            lr=hparams["lr_d"], weight_decay=hparams["weight_decay_d"], betas=betas)
        self.gen_opt = torch.optim.Adam(
            list(self.featurizer.parameters()) + list(self.classifier.parameters()),
            lr=hparams["lr_g"], weight_decay=hparams["weight_decay_g"], betas=betas)

    def _discriminator_loss(self, disc_input, all_y, labels):
        disc_out = self.discriminator(disc_input)
        if self.CLASS_BALANCE:
            per_sample = F.cross_entropy(disc_out, labels, reduction="none")
            disc_loss = (class_balanced_weights(all_y) * per_sample).sum()
        else:
            disc_loss = F.cross_entropy(disc_out, labels)
        # Gradient penalty on the discriminator's input (smoother discriminator).
        input_grad = torch.autograd.grad(
            F.cross_entropy(disc_out, labels, reduction="sum"), [disc_input], create_graph=True)[0]
        grad_penalty = (input_grad**2).sum(dim=1).mean(dim=0)
        return disc_loss + self.hparams["grad_penalty"] * grad_penalty

    def update(self, minibatches, unlabeled=None):
        self.update_count += 1
        all_x, all_y = concat_minibatches(minibatches)
        all_z = self.featurizer(all_x)
        disc_input = all_z + self.class_embeddings(all_y) if self.CONDITIONAL else all_z
        labels = domain_labels(minibatches, all_x.device)
        disc_loss = self._discriminator_loss(disc_input, all_y, labels)

        d_steps = int(self.hparams["d_steps_per_g_step"])
        if int(self.update_count.item()) % (1 + d_steps) < d_steps:
            self.disc_opt.zero_grad()
            disc_loss.backward()
            self.disc_opt.step()
            return {"disc_loss": disc_loss.item()}

        classifier_loss = F.cross_entropy(self.classifier(all_z), all_y)
        gen_loss = classifier_loss - self.hparams["lambda"] * disc_loss
        self.disc_opt.zero_grad()
        self.gen_opt.zero_grad()
        gen_loss.backward()
        self.gen_opt.step()
        return {"gen_loss": gen_loss.item()}

    def predict(self, x):
        return self.classifier(self.featurizer(x))


@register_algorithm
class DANN(_AbstractDANN):
    """Unconditional: the discriminator sees the features only."""


@register_algorithm
class CDANN(_AbstractDANN):
    """Conditional: features + class embedding, class-balanced discriminator loss."""

    CONDITIONAL = True
    CLASS_BALANCE = True


# ---------------------------------------------------------------------------------------
# URM: Krishnamachari, Ng, Foo, "Uniformly Distributed Feature Representations for Fair and
# Robust Learning", TMLR 2024. A discriminator tells the (bounded) features from uniform
# noise on the same range; the featurizer is trained to fool it, pushing the features
# towards a uniform distribution.

URM_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": networks.Identity,
                   "relu": nn.ReLU}
# The range [a, b) of each output activation, where the discriminator's noise is drawn.
URM_NOISE_RANGES = {"tanh": (-1.0, 1.0), "relu": (0.0, 1.0), "sigmoid": (0.0, 1.0)}


class OutputActivation(nn.Module):
    """A featurizer followed by a parameter-free activation (upstream sets a featurizer's
    `activation` attribute, its last operation; wrapping works for every featurizer)."""

    def __init__(self, featurizer, activation):
        super().__init__()
        self.featurizer = featurizer
        self.activation = activation
        self.n_outputs = featurizer.n_outputs

    def forward(self, x):
        return self.activation(self.featurizer(x))


def urm_discriminator(n_features, hidden_layers, width=100):
    layers = [("dense1", nn.Linear(n_features, width)), ("act1", nn.LeakyReLU())]
    for i in range(hidden_layers):
        layers += [(f"dense{i + 2}", nn.Linear(width, width)), (f"act2{i + 2}", nn.LeakyReLU())]
    layers.append(("output", nn.Linear(width, 1)))
    return nn.Sequential(OrderedDict(layers))


@register_algorithm
class URM(Algorithm):
    @staticmethod
    def declare_hparams(hparam, dataset):
        if dataset.small_images:
            hparam("urm_discriminator_lr", 1e-3, lambda r: 10**r.uniform(-5.5, -3.5))
        else:
            hparam("urm_discriminator_lr", 5e-5, lambda r: 10**r.uniform(-6, -4.5))
        hparam("urm", "adversarial", lambda r: str(r.choice(["adversarial"])))  # unused, as upstream
        hparam("urm_adv_lambda", 0.1, lambda r: float(r.uniform(0, 0.2)))
        hparam("urm_discriminator_label_smoothing", 0, lambda r: float(r.uniform(0, 0)))
        hparam("urm_discriminator_optimizer", "adam", lambda r: str(r.choice(["adam"])))
        hparam("urm_discriminator_hidden_layers", 1, lambda r: int(r.choice([1, 2, 3])))
        hparam("urm_generator_output", "tanh", lambda r: str(r.choice(["tanh", "relu"])))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        output = hparams["urm_generator_output"]
        if output not in URM_ACTIVATIONS:
            raise ValueError(f"URM: urm_generator_output must be one of {sorted(URM_ACTIVATIONS)}, "
                             f"got {output!r}")
        if output not in URM_NOISE_RANGES:
            # upstream accepted it here and failed at the first update
            raise ValueError(f"URM: urm_generator_output={output!r} has no bounded range to draw "
                             f"the discriminator's noise from; use one of {sorted(URM_NOISE_RANGES)}")
        featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"])
        self.featurizer = OutputActivation(featurizer, URM_ACTIVATIONS[output]())
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        self.discriminator = urm_discriminator(
            featurizer.n_outputs, int(hparams["urm_discriminator_hidden_layers"]))
        kind = hparams["urm_discriminator_optimizer"]
        lr, weight_decay = hparams["urm_discriminator_lr"], hparams["weight_decay"]
        if kind == "sgd":
            self.discriminator_opt = torch.optim.SGD(
                self.discriminator.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        elif kind == "adam":
            self.discriminator_opt = torch.optim.Adam(
                self.discriminator.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"URM: urm_discriminator_optimizer must be 'sgd' or 'adam', got {kind!r}")

    def _uniform(self, shape, like):
        """U[0, 1) from the algorithm's generator, on `like`'s device and dtype."""
        return torch.rand(shape, generator=self.generator).to(device=like.device, dtype=like.dtype)

    def update(self, minibatches, unlabeled=None):
        hp = self.hparams
        adv_lambda = hp["urm_adv_lambda"]
        all_x, all_y = concat_minibatches(minibatches)
        features = self.featurizer(all_x)
        ce = F.cross_entropy(self.classifier(features), all_y, reduction="none").mean()
        fooling = F.binary_cross_entropy_with_logits(
            self.discriminator(features).squeeze(1), torch.ones(len(features), device=features.device,
                                                                dtype=features.dtype))
        loss = ce + adv_lambda * fooling
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

        # The discriminator: uniform noise ("real") against the pre-step features ("fake").
        low, high = URM_NOISE_RANGES[hp["urm_generator_output"]]
        features = features.detach()
        noise = low + (high - low) * self._uniform(features.shape, features)
        n = len(features)
        smoothing = hp["urm_discriminator_label_smoothing"]
        if smoothing:
            real = 1 - smoothing + smoothing * self._uniform((n,), features)
            fake = smoothing * self._uniform((n,), features)
        else:
            real = torch.ones(n, device=features.device, dtype=features.dtype)
            fake = torch.zeros(n, device=features.device, dtype=features.dtype)
        disc_loss = (F.binary_cross_entropy_with_logits(self.discriminator(noise).squeeze(1), real)
                     + adv_lambda * F.binary_cross_entropy_with_logits(
                         self.discriminator(features).squeeze(1), fake))
        self.discriminator_opt.zero_grad()
        disc_loss.backward()
        self.discriminator_opt.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.classifier(self.featurizer(x))
