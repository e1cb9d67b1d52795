"""Thread-simulated nn.DataParallel replicas for the synchronized normalization tests."""
import threading

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
