"""ERM++ (Teterwak, Saito, Tsiligkaridis, Saenko, Plummer, arXiv 2304.01973, 2023): ERM with
a linear-probe warm-up, a simple moving average (SMA) of the weights, and an optional
validation-driven learning-rate schedule.

Everything the protocol needs during training happens inside `update`, so `train.py` and
`sweep` run it unchanged:

* updates 1 .. linear_steps + 1 step the classifier only (its own Adam, lr `linear_lr`);
  full fine-tuning with the main Adam starts after that;
* after every update the SMA model takes a snapshot: it equals the live weights until
  update SMA_START_ITER - 1, and from then on is the uniform average of every snapshot
  since that one (parameters and BatchNorm buffers alike); `predict` uses the SMA model;
* `set_lr` is upstream's hook for its two-stage auto-lr script (ReduceLROnPlateau on the
  training domains' validation loss, then a replay of the recorded schedule). `train.py`
  never calls it, as upstream's `train.py`, so the learning rate stays constant there.
"""
import copy

import torch
import torch.nn.functional as F

from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import build_network, concat_minibatches
from domainbed.algorithms.registry import register_algorithm


def _uses_train_mode(network):
    """True when a forward pass in train mode changes state or draws random numbers
    (BatchNorm running statistics, dropout with p > 0)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return True
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
    return False


@register_algorithm
class ERMPlusPlus(Algorithm):
    """Linear probe, then full fine-tuning; predictions from the moving-average model."""

    SMA_START_ITER = 600  # hard-coded upstream

    @staticmethod
    def declare_hparams(hparam, dataset):
        # Also uses the unconditional linear_steps, lars and freeze_bn.
        hparam("linear_lr", 5e-5, lambda r: 10**r.uniform(-5, -3.5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer, self.classifier, self.network = build_network(
            input_shape, num_classes, hparams)
        if hparams.get("lars", False):
            raise ValueError(
                "ERMPlusPlus: hparam lars=True is not supported (upstream's ERM++ fails with it "
                "too: its LARS optimizer rejects the foreach argument); use lars=false (Adam).")
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"],
            foreach=False)
        self.linear_optimizer = torch.optim.Adam(
            self.network[1].parameters(), lr=hparams["linear_lr"],
            weight_decay=hparams["weight_decay"], foreach=False)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", patience=1)
        self.lr_schedule = []
        self.lr_schedule_changes = 0

        self.network_sma = copy.deepcopy(self.network)
        self.network_sma.eval()
        self.sma_start_iter = self.SMA_START_ITER
        self.global_iter = 0
        self.sma_count = 0
        # The SMA model's train-mode pass only matters with BatchNorm or dropout.
        self._sma_train_pass = not hparams.get("freeze_bn", False) and _uses_train_mode(self.network)

    def _linear_phase(self):
        return self.global_iter <= self.hparams["linear_steps"]

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        if self._linear_phase():
            # Only the classifier is stepped; the featurizer's forward pass (BatchNorm
            # statistics, dropout) is as upstream, its gradients are not needed.
            with torch.no_grad():
                features = self.network[0](all_x)
            loss = F.cross_entropy(self.network[1](features), all_y)
            optimizer = self.linear_optimizer
        else:
            loss = F.cross_entropy(self.network(all_x), all_y)
            optimizer = self.optimizer
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        self.update_sma()
        if self._sma_train_pass:
            # One BatchNorm momentum step of the SMA model on this batch (output unused).
            self.network_sma.train()
            with torch.no_grad():
                self.network_sma(all_x)
        return {"loss": loss.item()}

    @torch.no_grad()
    def update_sma(self):
        self.global_iter += 1
        averaging = self.global_iter >= self.sma_start_iter
        if averaging:
            self.sma_count += 1
        count = self.sma_count
        live = self.network.state_dict()
        for (name, sma_value), live_value in zip(self.network_sma.state_dict().items(), live.values()):
            if "num_batches_tracked" in name:
                continue  # the SMA model keeps its own counter
            if averaging:
                sma_value.copy_((sma_value * count + live_value) / (1.0 + count))
            else:
                sma_value.copy_(live_value)

    def predict(self, x):
        self.network_sma.eval()
        return self.network_sma(x)

    @torch.no_grad()
    def set_lr(self, eval_loaders_iid=None, schedule=None, device=None):
        """Upstream's auto-lr hook (its `train_autolr.py` only; not called by train.py).

        Without `schedule`: step ReduceLROnPlateau on the SMA model's mean validation loss
        over `eval_loaders_iid` and return the recorded list of [lr] (its last entry [0.0]
        after the third change: stop). With `schedule`: apply its first lr, return the rest.
        """
        if self.global_iter <= self.hparams["linear_steps"]:
            return schedule
        if schedule is None:
            self.network_sma.eval()
            losses = []
            for loader in eval_loaders_iid:
                batch_losses = [F.cross_entropy(self.network_sma(x.to(device)), y.to(device)).item()
                                for x, y in loader]
                losses.append(sum(batch_losses) / len(batch_losses))
            self.scheduler.step(sum(losses) / len(losses))
            self.lr_schedule.append(list(self.scheduler.get_last_lr()))
            if len(self.lr_schedule) > 1 and self.lr_schedule[-1] != self.lr_schedule[-2]:
                self.lr_schedule_changes += 1
            if self.lr_schedule_changes == 3:
                self.lr_schedule[-1] = [0.0]
            return self.lr_schedule
        # upstream rounds the replayed lr through a float32 tensor
        self.optimizer.param_groups[0]["lr"] = float(torch.tensor(schedule[0][0], dtype=torch.float32))
        return schedule[1:]

    # -- full state: counters, schedule and scheduler beside the optimizers -------------
    def get_extra_state(self):
        state = super().get_extra_state()
        state["erm_plus_plus"] = {
            "global_iter": self.global_iter,
            "sma_count": self.sma_count,
            "lr_schedule": [list(lr) for lr in self.lr_schedule],
            "lr_schedule_changes": self.lr_schedule_changes,
            "scheduler": self.scheduler.state_dict(),
        }
        return state

    def set_extra_state(self, state):
        state = dict(state)
        own = state.pop("erm_plus_plus", None)
        super().set_extra_state(state)
        if own is not None:
            self.global_iter = own["global_iter"]
            self.sma_count = own["sma_count"]
            self.lr_schedule = [list(lr) for lr in own["lr_schedule"]]
            self.lr_schedule_changes = own["lr_schedule_changes"]
            self.scheduler.load_state_dict(own["scheduler"])
