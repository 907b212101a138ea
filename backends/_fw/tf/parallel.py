"""TensorFlow process group (backends/_fw/parallel.py): MultiWorkerMirroredStrategy's collectives over the
cluster of TF_CONFIG, one worker per process.

The Runner's variables stay ordinary variables (each worker holds the whole model and applies the same summed
gradients); the strategy sums them with its replica context's all_reduce (collective ops between the workers). The strategy must exist before TensorFlow runs any op, so Job.run builds the group
before the Runner. Its heartbeats notice a dead worker within seconds; CommunicationOptions' timeout bounds
a collective that waits on a hung one.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..parallel import failure

COLLECTIVE_ERRORS = (tf.errors.OpError, RuntimeError, ValueError)


class ProcessGroup:
    """tf.distribute.MultiWorkerMirroredStrategy over TF_CONFIG's cluster."""

    def __init__(self, layout, timeout: float, device: str = "cpu"):
        self.layout = layout
        if device != "gpu":  # one CPU replica per worker; a visible GPU would add replicas
            tf.config.set_visible_devices([], "GPU")
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        try:
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except COLLECTIVE_ERRORS as exc:
            raise failure(layout, "nothing yet (joining the cluster)", exc) from None
        if self.strategy.num_replicas_in_sync != layout.size:
            raise failure(layout, "nothing yet", RuntimeError(
                f"the strategy has {self.strategy.num_replicas_in_sync} replicas for {layout.size} processes "
                "(one device per worker: CUDA_VISIBLE_DEVICES)"))
        self.barrier()

    def _sum(self, tensors: list, what: str) -> list:
        if not tensors:
            return []
        try:
            return self._all_reduce(tensors)
        except COLLECTIVE_ERRORS as exc:
            raise failure(self.layout, what, exc) from None

    @tf.function
    def _all_reduce(self, tensors):
        """The sum over the workers, in the replica context of the strategy's one local replica: traced once per
        structure (the gradients of a run have one), where an eager cross-replica reduction (batch_reduce_to)
        builds its collective anew at every call (0.14 s against 0.02 s for 40 small tensors)."""
        with tf.device(self.strategy.extended.worker_devices[0]):  # a traced input has no device of its own
            tensors = [tf.identity(t) for t in tensors]
        summed = self.strategy.run(
            lambda values: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values),
            args=(tensors,))
        return [self.strategy.experimental_local_results(t)[0] for t in summed]

    def sum_gradients(self, runner, loss: float) -> float:
        """Sum every variable's accumulated gradient and the update's loss over the processes; a variable
        some process has a gradient for gets one everywhere (zeros where it had none), as in one process."""
        flags = tf.constant([loss] + [g is not None for g in runner.grads], dtype=tf.float64)
        values = self._sum([flags], "the update's loss")[0].numpy()
        present = [i for i, there in enumerate(values[1:] > 0) if there]
        with tf.device(runner.device):
            grads = [runner.grads[i] if runner.grads[i] is not None else tf.zeros_like(runner.variables[i])
                     for i in present]
            for i, summed in zip(present, self._sum(grads, "the gradients")):
                runner.grads[i] = tf.identity(summed)
        return float(values[0])

    def sum_arrays(self, arrays: list) -> list:
        return [t.numpy() for t in self._sum([tf.constant(np.ascontiguousarray(a)) for a in arrays],
                                             "the evaluation outputs")]

    def barrier(self) -> None:
        self._sum([tf.zeros([1])], "a barrier")

    def close(self) -> None:
        pass
