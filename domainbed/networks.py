"""Featurizers and classifiers (upstream DomainBed's networks, chosen by input shape).

- 1-D inputs: hparam `vector_featurizer` "linear" = the identity (the classifier is then a
  linear model on the inputs), "mlp" (upstream's, and the default when the hparam is
  absent) = MLP with width/depth/dropout from the `mlp_*` hparams.
- 28x28: the MNIST CNN of the DomainBed paper (128 features).
- 224x224: ResNet-18/50 from torchvision (ImageNet weights unless hparams['pretrained'] is
  False), or timm's `resnet50.ram_in1k` when `resnet50_augmix` is set (a dependency, as upstream's requirements).
"""
import contextlib
import logging
import os
import socket
import urllib.parse

import torch
import torch.nn as nn

from domainbed.errors import BadInput


class Identity(nn.Module):
    def forward(self, x):
        return x


class IdentityFeaturizer(nn.Module):
    """The inputs themselves as features (no parameters): n_outputs = the input size.

    With autograd on, inputs that do not require grad come back as a leaf that does, so
    that algorithms differentiating with respect to the features (DANN's gradient penalty,
    RSC's feature masks) work as with a learned featurizer; the values are unchanged.
    """

    def __init__(self, n_inputs):
        super().__init__()
        self.n_outputs = n_inputs

    def forward(self, x):
        if torch.is_grad_enabled() and not x.requires_grad:
            return x.detach().requires_grad_()
        return x


VECTOR_FEATURIZERS = ("linear", "mlp")


class MLP(nn.Module):
    """Linear -> Dropout -> ReLU, (depth - 2) hidden blocks, then a linear output layer."""

    def __init__(self, n_inputs, n_outputs, hparams):
        super().__init__()
        self.input = nn.Linear(n_inputs, hparams["mlp_width"])
        self.dropout = nn.Dropout(hparams["mlp_dropout"])
        self.hiddens = nn.ModuleList([
            nn.Linear(hparams["mlp_width"], hparams["mlp_width"])
            for _ in range(hparams["mlp_depth"] - 2)])
        self.output = nn.Linear(hparams["mlp_width"], n_outputs)
        self.n_outputs = n_outputs

    def forward(self, x):
        x = torch.relu(self.dropout(self.input(x)))
        for hidden in self.hiddens:
            x = torch.relu(self.dropout(hidden(x)))
        return self.output(x)


class MNIST_CNN(nn.Module):
    """Four 3x3 conv layers with GroupNorm, global average pooling: 2*width features.

    width = 64 is upstream's network (128 features). The CPU-sized offline datasets use a
    narrower one (hparam `mnist_cnn_width`) so that a whole sweep fits on a laptop.
    """

    def __init__(self, input_shape, width=64):
        super().__init__()
        wide = 2 * width
        self.n_outputs = wide
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(width, wide, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(wide, wide, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(wide, wide, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, width)
        self.bn1 = nn.GroupNorm(8, wide)
        self.bn2 = nn.GroupNorm(8, wide)
        self.bn3 = nn.GroupNorm(8, wide)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.bn0(torch.relu(self.conv1(x)))
        x = self.bn1(torch.relu(self.conv2(x)))
        x = self.bn2(torch.relu(self.conv3(x)))
        x = self.bn3(torch.relu(self.conv4(x)))
        return self.avgpool(x).flatten(1)


class PooledMLP(nn.Module):
    """The offline datasets' CPU-sized featurizer: 2x2 average pooling to 14x14 (the IRM
    paper's Colored MNIST inputs), then two ReLU layers of `width` units (the features).

    At width 128 (hparam `offline_mlp_width`), about 0.1 M multiply-adds per image against
    8 M for the quarter-width MNIST CNN: a step costs milliseconds on one CPU core, so a
    sweep can afford convergence.
    """

    def __init__(self, input_shape, width=128):
        super().__init__()
        n_inputs = input_shape[0] * (input_shape[1] // 2) * (input_shape[2] // 2)
        self.pool = nn.AvgPool2d(2)
        self.layers = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(),
                                    nn.Linear(width, width), nn.ReLU())
        self.n_outputs = width

    def forward(self, x):
        return self.layers(self.pool(x).flatten(1))


class WeightsUnavailableError(BadInput, RuntimeError):
    """Pretrained weights that cannot be loaded here; the message says where to put them
    or how to train without them (exit 2)."""


def _torchvision_resnet(depth, pretrained):
    import torchvision

    builder = torchvision.models.resnet18 if depth == 18 else torchvision.models.resnet50
    weights_enum = (torchvision.models.ResNet18_Weights if depth == 18
                    else torchvision.models.ResNet50_Weights)
    # IMAGENET1K_V1 are the weights of torchvision's old `pretrained=True`, as upstream.
    weights = weights_enum.IMAGENET1K_V1 if pretrained else None
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as error:  # urllib errors are OSErrors
        raise WeightsUnavailableError(
            f"cannot load ImageNet weights for resnet{depth} ({error.__class__.__name__}: {error}). "
            f"Put the weights file in $TORCH_HOME/hub/checkpoints (default ~/.cache/torch), "
            f"or train from scratch with --hparams '{{\"pretrained\": false}}'.") from error


TIMM_RESNET50 = "resnet50.ram_in1k"            # upstream's default network
TIMM_RESNET50_HUB = "timm/resnet50.ram_in1k"
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_weights_error(reason):
    return WeightsUnavailableError(
        f"cannot load timm's ImageNet weights {TIMM_RESNET50} ({reason}). Offline: on a "
        f"machine with internet run python -c \"import timm; timm.create_model('{TIMM_RESNET50}', "
        f"pretrained=True)\" and copy ~/.cache/huggingface/hub/models--timm--{TIMM_RESNET50} "
        f"into $HF_HOME/hub here (default ~/.cache/huggingface/hub); or train from scratch "
        f"with --hparams '{{\"pretrained\": false}}'.")


def _cached_timm_weights():
    """The path of a cached copy of the weights in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in TIMM_WEIGHT_FILES:
        path = try_to_load_from_cache(TIMM_RESNET50_HUB, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_unreachable():
    """Why the Hugging Face hub cannot be reached (offline mode, no name resolution), or
    None when it may be: checked first, so that an offline machine fails at once instead
    of after the hub client's retries (about a minute)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and no cached copy was found"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                             "all_proxy")):
        return None   # through a proxy: let the client try
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"no cached copy, and {host} cannot be reached: {error.strerror or error}"
    return None


@contextlib.contextmanager
def _quiet_hub():
    """The hub client's retry warnings stay out of the console (the error says it all)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _timm_resnet50_augmix(pretrained):
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            "hparams['resnet50_augmix'] needs timm (a dependency of this package: reinstall "
            "it with pip install -e .), or use torchvision's ResNet-50 with --hparams "
            "'{\"resnet50_augmix\": false}'.") from error
    if not pretrained:
        return timm.create_model(TIMM_RESNET50, pretrained=False)
    cached = _cached_timm_weights()
    if cached is not None:    # read the file itself: no network request at all
        try:
            return timm.create_model(TIMM_RESNET50, pretrained=True,
                                     pretrained_cfg_overlay={"file": cached})
        except Exception as error:
            raise _timm_weights_error(f"the cached copy {cached} is unreadable: "
                                      f"{type(error).__name__}: {error}") from error
    unreachable = _hub_unreachable()
    if unreachable:
        raise _timm_weights_error(unreachable)
    try:
        with _quiet_hub():
            return timm.create_model(TIMM_RESNET50, pretrained=True)
    except Exception as error:  # hub download failures come in many types
        raise _timm_weights_error(f"{type(error).__name__}: {' '.join(str(error).split())}") from error


class ResNet(nn.Module):
    """A ResNet backbone without its fc layer, then dropout; BatchNorm optionally frozen."""

    def __init__(self, input_shape, hparams):
        super().__init__()
        pretrained = hparams.get("pretrained", True)
        if hparams.get("resnet50_augmix", False):
            self.network = _timm_resnet50_augmix(pretrained)
            self.n_outputs = 2048
            self.network.reset_classifier(0)
        else:
            depth = 18 if hparams["resnet18"] else 50
            self.network = _torchvision_resnet(depth, pretrained)
            self.n_outputs = 512 if depth == 18 else 2048
            self.network.fc = Identity()
        self._adapt_input_channels(input_shape[0])
        self.freeze_bn = hparams.get("freeze_bn", False)
        self.dropout = nn.Dropout(hparams["resnet_dropout"])
        self.hparams = hparams

    def _adapt_input_channels(self, nc):
        if nc == 3:
            return
        old = self.network.conv1
        new = nn.Conv2d(nc, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            for i in range(nc):  # channel i copies pretrained channel i mod 3
                new.weight[:, i] = old.weight[:, i % 3]
        self.network.conv1 = new

    def forward(self, x):
        return self.dropout(self.network(x))

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_bn:
            for m in self.network.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def Featurizer(input_shape, hparams):
    """The featurizer upstream picks for this input shape."""
    if len(input_shape) == 1:
        kind = hparams.get("vector_featurizer", "mlp")
        if kind == "linear":
            return IdentityFeaturizer(input_shape[0])
        if kind == "mlp":
            return MLP(input_shape[0], hparams["mlp_width"], hparams)
        raise ValueError(f"hparams['vector_featurizer'] must be one of {VECTOR_FEATURIZERS}, "
                         f"got {kind!r}")
    if tuple(input_shape[1:3]) == (28, 28):
        if hparams.get("offline_net", "cnn") == "mlp":
            return PooledMLP(input_shape, hparams.get("offline_mlp_width", 128))
        return MNIST_CNN(input_shape, hparams.get("mnist_cnn_width", 64))
    if tuple(input_shape[1:3]) == (224, 224):
        if hparams.get("vit") or hparams.get("dinov2"):
            raise NotImplementedError(
                "ViT/DINOv2 featurizers are not part of this fork; set vit and dinov2 to false.")
        return ResNet(input_shape, hparams)
    raise NotImplementedError(
        f"no featurizer for input shape {tuple(input_shape)}: expected a vector, 28x28 or 224x224.")


def Classifier(in_features, out_features, is_nonlinear=False):
    if is_nonlinear:
        return nn.Sequential(
            nn.Linear(in_features, in_features // 2), nn.ReLU(),
            nn.Linear(in_features // 2, in_features // 4), nn.ReLU(),
            nn.Linear(in_features // 4, out_features))
    return nn.Linear(in_features, out_features)
