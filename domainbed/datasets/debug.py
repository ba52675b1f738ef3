"""Debug28 / Debug224: three environments of 16 random inputs with binary labels."""
from domainbed.datasets.base import MultipleDomainDataset
from domainbed.datasets.registry import register_dataset


class _Debug(MultipleDomainDataset):
    N_WORKERS = 0             # in-memory tensors: worker processes only add overhead
    ENVIRONMENTS = ["0", "1", "2"]

    def __init__(self, root, test_envs, hparams):
        import torch

        super().__init__()
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = 2
        self.datasets = [
            torch.utils.data.TensorDataset(
                torch.randn(16, *self.INPUT_SHAPE), torch.randint(0, self.num_classes, (16,)))
            for _ in self.ENVIRONMENTS
        ]


@register_dataset
class Debug28(_Debug):
    INPUT_SHAPE = (3, 28, 28)
    SMALL_IMAGES = True


@register_dataset
class Debug224(_Debug):
    INPUT_SHAPE = (3, 224, 224)
