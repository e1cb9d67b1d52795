"""A one-round master/slave exchange between the replicas of one layer under nn.DataParallel.

Each replica runs in its own thread. The slaves hand their message to the master and block;
the master waits for all of them, reduces the messages into one reply per replica, and hands
the replies back. The tensors may carry autograd history, so the reduction stays differentiable.
A replica that fails (out of memory, say) aborts the exchange: every replica waiting on it, or
reaching it later, raises that replica's error instead of waiting forever.
"""
import copy
import queue

_ABORTED = object()  # put on every queue by abort()


class MasterSlaveExchange:
    """Exchange for ``num_replicas`` replicas: index 0 is the master, 1..n-1 the slaves."""

    def __init__(self, num_replicas):
        self.num_replicas = num_replicas
        self._to_master = queue.Queue()
        self._to_slaves = [queue.Queue() for _ in range(num_replicas - 1)]
        self._error = None

    def abort(self, error):
        """Make every replica waiting on this exchange, and every one reaching it later, raise ``error``."""
        if self._error is None:
            self._error = error
        for waiting in (self._to_master, *self._to_slaves):
            waiting.put(_ABORTED)

    def _receive(self, waiting):
        """The next item of a queue; a copy of the failed replica's error is raised if it was aborted."""
        item = waiting.get()
        if item is _ABORTED:
            # A copy per replica: one exception object raised in several threads would share its traceback.
            raise copy.copy(self._error) from self._error
        return item

    def run_master(self, message, reduce):
        """Collect every replica's message, call reduce(messages) -> replies, return reply 0."""
        messages = [message] + [None] * (self.num_replicas - 1)
        for _ in range(self.num_replicas - 1):
            index, slave_message = self._receive(self._to_master)
            messages[index] = slave_message
        replies = reduce(messages)
        for slave_queue, reply in zip(self._to_slaves, replies[1:]):
            slave_queue.put(reply)
        return replies[0]

    def run_slave(self, index, message):
        """Send this slave's message to the master and wait for its reply."""
        self._to_master.put((index, message))
        return self._receive(self._to_slaves[index - 1])
