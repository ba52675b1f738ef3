"""The model files of a run: upstream's model.pkl dict (at the end, or at every checkpoint
when asked) and model_iid.pkl, the model training-domain validation selects so far."""
import os

from domainbed import model_files
from domainbed.training import checkpoint


def save_model(job, filename, **extra):
    """Upstream's model.pkl dict. `model_dict` is the module's weights and buffers under
    upstream's keys (loads strict into upstream's class; for `X+SWAD` / `X+MA` the
    averaged model, into X's class); the training state is checkpoint.pt's."""
    if job.config.skip_model_save:
        return
    from domainbed.lib.model_state import model_state_dict

    dump = {
        "args": job.config.record_args(),
        "model_input_shape": job.dataset.input_shape,
        "model_num_classes": job.dataset.num_classes,
        "model_num_domains": len(job.dataset) - len(job.config.test_envs),
        "model_hparams": job.hparams,
        "model_dict": model_state_dict(job.algorithm),
    }
    dump.update(extra)
    checkpoint.save_atomic(dump, os.path.join(job.config.output_dir, filename))


def save_selected_model(job, record, best_val_acc):
    """With DOMAINBED_SAVE_SELECTED set: model_iid.pkl is the model of the record with the
    best training-domain validation accuracy so far (the first of equals), the checkpoint
    training-domain validation selects in this run; the oracle's is the last, model.pkl.
    Returns the best accuracy so far."""
    if not model_files.save_selected_enabled():
        return best_val_acc
    val_acc = model_files.training_domain_val_acc(record, job.config.test_envs)
    if best_val_acc is not None and not val_acc > best_val_acc:
        return best_val_acc
    save_model(job, model_files.SELECTED_MODEL_FILE, step=record["step"], val_acc=val_acc)
    return val_acc
