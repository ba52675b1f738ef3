"""Featurizers by input shape, classifiers, frozen BatchNorm and the offline weights error."""
import urllib.error

import pytest
import torch

from domainbed import hparams_registry, networks
import support


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


# ---------------------------------------------------------------------------------------
# Upstream's default network (timm's resnet50.ram_in1k) from the base install

def test_timm_is_a_base_requirement():
    import configparser
    import os

    config = configparser.ConfigParser()
    config.read(os.path.join(support.REPO_ROOT, "setup.cfg"))
    requirements = config["options"]["install_requires"].split()
    assert any(r.startswith("timm") for r in requirements)


def test_timm_weights_offline_fail_at_once_with_how_to_place_them(monkeypatch, tmp_path):
    import socket

    import timm
    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def no_download(*args, **kwargs):   # the hub client must not even be asked
        if kwargs.get("pretrained"):
            raise AssertionError("tried to download")
        return real_create(*args, **kwargs)

    real_create = timm.create_model
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(timm, "create_model", no_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(networks, "_cached_timm_weights", lambda: None)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(networks.WeightsUnavailableError) as caught:
        networks.Featurizer((3, 224, 224), hparams(resnet50_augmix=True, pretrained=True))
    message = str(caught.value)
    assert "\n" not in message and "cannot be reached" in message
    assert "models--timm--resnet50.ram_in1k" in message and '"pretrained": false' in message


def test_cached_timm_weights_are_read_from_the_file(monkeypatch, tmp_path):
    import timm

    reference = timm.create_model("resnet50.ram_in1k", pretrained=False)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.25)
    path = str(tmp_path / "model.pth")
    torch.save(reference.state_dict(), path)
    monkeypatch.setattr(networks, "_cached_timm_weights", lambda: path)
    monkeypatch.setattr(networks, "_hub_unreachable",
                        lambda: pytest.fail("the hub was consulted despite a cached copy"))
    net = networks.Featurizer((3, 224, 224), hparams(resnet50_augmix=True, pretrained=True))
    assert net.n_outputs == 2048
    assert torch.equal(net.network.conv1.weight, reference.conv1.weight)
