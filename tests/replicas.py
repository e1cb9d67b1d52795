"""Thread-simulated nn.DataParallel replicas and gloo processes for the synchronized normalization tests."""
import threading

import torch
import torch.multiprocessing as mp

from sync_batchnorm.replicate import execute_replication_callbacks

TIMEOUT_S = 60


def replicas_of(layer, count):
    """Copies of ``layer`` linked as DataParallel links them, parameters as differentiable views."""
    replicas = [layer._replicate_for_data_parallel() for _ in range(count)]
    for replica in replicas:
        for name, param in layer.named_parameters():
            setattr(replica, name, param.view_as(param))
    execute_replication_callbacks(replicas)
    return replicas


def run_in_threads(calls):
    """Run each call in its own thread, as nn.parallel.parallel_apply (forward) and the autograd
    engine's per-device threads (backward) run replicas; returns their results in order."""
    results, errors = [None] * len(calls), []

    def work(i):
        try:
            results[i] = calls[i]()
        except Exception as e:  # re-raised in the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a replica is still waiting for the others"
    if errors:
        raise errors[0]
    return results


def step_on_share(layer, x, grad, rank, parts):
    """One forward and backward of ``layer`` on rank's share of the batch (parts[rank] samples):
    its output, the input and parameter gradients, and the layer's state_dict."""
    start = sum(parts[:rank])
    leaf = x[start:start + parts[rank]].clone().requires_grad_()
    out = layer(leaf * 1)  # a non-leaf input, which in-place layers need
    out.backward(grad[start:start + parts[rank]])
    return {"out": out.detach(), "grad": leaf.grad, "weight": layer.weight.grad, "bias": layer.bias.grad,
            "state": layer.state_dict()}


def _gloo_worker(rank, world_size, store_path, results, run_part):
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                         world_size=world_size)
    torch.save(run_part(rank), f"{results}.{rank}")
    torch.distributed.destroy_process_group()


def run_in_gloo_processes(run_part, world_size, tmp_path):
    """run_part(rank) -> a dict of tensors, in each of ``world_size`` gloo processes; returns the dicts.

    run_part must be a module-level function (the processes are spawned).
    """
    results = str(tmp_path / "result")
    mp.spawn(_gloo_worker, args=(world_size, str(tmp_path / "store"), results, run_part), nprocs=world_size)
    return [torch.load(f"{results}.{rank}", weights_only=True) for rank in range(world_size)]
