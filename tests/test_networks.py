"""Featurizers by input shape, classifiers, frozen BatchNorm and the offline weights error."""
import urllib.error

import pytest
import torch

from domainbed import hparams_registry, networks


def hparams(**overrides):
    hp = hparams_registry.default_hparams("ERM", "Debug28")
    hp.update(overrides)
    return hp


@pytest.mark.parametrize("width, n_outputs", [(64, 128), (16, 32)])
def test_mnist_cnn_outputs(width, n_outputs):
    net = networks.Featurizer((2, 28, 28), hparams(mnist_cnn_width=width))
    assert isinstance(net, networks.MNIST_CNN) and net.n_outputs == n_outputs
    assert net(torch.randn(4, 2, 28, 28)).shape == (4, n_outputs)


def test_upstream_width_is_the_default_network():
    net = networks.Featurizer((1, 28, 28), hparams())
    assert net.conv1.out_channels == 64 and net.conv4.out_channels == 128


def test_mlp_for_vector_inputs():
    net = networks.Featurizer((10,), hparams(mlp_width=32, mlp_depth=4, mlp_dropout=0.0))
    assert net(torch.randn(5, 10)).shape == (5, 32) and len(net.hiddens) == 2


def test_resnet18_without_weights_and_frozen_bn():
    hp = hparams(resnet18=True, resnet50_augmix=False, pretrained=False, freeze_bn=True)
    net = networks.Featurizer((1, 224, 224), hp)   # 1 channel: conv1 is rebuilt
    assert net.n_outputs == 512 and net.network.conv1.in_channels == 1
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        assert net(torch.randn(2, 1, 224, 224)).shape == (2, 512)


def test_missing_weights_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    hp = hparams(resnet18=True, resnet50_augmix=False, pretrained=True)
    with pytest.raises(networks.WeightsUnavailableError, match='"pretrained": false'):
        networks.Featurizer((3, 224, 224), hp)


def test_unsupported_shapes_and_vit_are_refused():
    with pytest.raises(NotImplementedError, match="28x28 or 224x224"):
        networks.Featurizer((3, 64, 64), hparams())
    with pytest.raises(NotImplementedError, match="ViT"):
        networks.Featurizer((3, 224, 224), hparams(vit=True))


def test_classifiers():
    assert isinstance(networks.Classifier(8, 3), torch.nn.Linear)
    nonlinear = networks.Classifier(8, 3, is_nonlinear=True)
    assert nonlinear(torch.randn(2, 8)).shape == (2, 3) and len(nonlinear) == 5
