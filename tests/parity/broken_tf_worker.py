"""A parity worker whose TF Funnel port is broken on purpose: encoder block 1, layer 1 gets a wrong
FFN LayerNorm epsilon. Run as `python broken_tf_worker.py JOB.json` (its own process, like a real
worker: tensorflow and paddle must not share one)."""
import sys

from backends.funnel import modeling_tf
from parity.worker import main

BROKEN_BLOCK, BROKEN_LAYER = 1, 1
_original_init = modeling_tf.FunnelEncoder.__init__


def _broken_init(self, config):
    _original_init(self, config)
    self.blocks[BROKEN_BLOCK][BROKEN_LAYER].ffn.layer_norm.eps = 1e-1


modeling_tf.FunnelEncoder.__init__ = _broken_init

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
