"""Worker threads for the chunk loops on the CPU.

Each chunk is a few dozen small tensor operations. Run on torch's own intra-op
threads, every one of them is a parallel region ending in a barrier,
thousands per call, and when the cores are shared (data loaders, a second
job) a barrier waits for a thread the OS has descheduled. Instead each worker
thread runs whole chunks with single-threaded operations and takes the next
chunk when it is done: no barrier until the end, and a thread that is
descheduled delays only itself.
"""
from __future__ import annotations

import threading

import torch


def cpu_workers(x: torch.Tensor, n_chunks: int) -> int:
    """How many threads walk the chunks: torch's intra-op thread count on the
    CPU (one on a GPU, or with a single chunk)."""
    if x.is_cuda or n_chunks < 2:
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks))


# torch.set_num_threads also resizes a process-wide thread pool: never from two
# threads at once.
_SET_THREADS = threading.Lock()


def run_chunks(fn, spans, make_work, workers: int) -> list:
    """``[fn(c0, c1, work) for c0, c1 in spans]``, by ``workers`` threads."""
    if workers <= 1:
        work = make_work()
        return [fn(c0, c1, work) for c0, c1 in spans]
    out = [None] * len(spans)
    errors = []
    todo = iter(range(len(spans)))
    lock = threading.Lock()
    saved = torch.get_num_threads()

    def worker():
        with _SET_THREADS:
            torch.set_num_threads(1)  # this thread's operations run on it alone
        torch.set_grad_enabled(False)  # per thread: new threads start with autograd on
        try:
            work = make_work()
            while True:
                with lock:
                    i = next(todo, None)
                if i is None or errors:
                    return
                out[i] = fn(*spans[i], work)
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers - 1)]
    for th in threads:
        th.start()
    grad_mode = torch.is_grad_enabled()
    try:
        worker()  # the calling thread is one of the workers
        for th in threads:
            th.join()
    finally:
        with _SET_THREADS:
            torch.set_num_threads(saved)
        torch.set_grad_enabled(grad_mode)
    if errors:
        raise errors[0]
    return out
