"""The torch networks of the learned backends, one module per backend, each with its
dimensions dataclass (saved in checkpoints) and tiny test dims; :mod:`avsync.nn.blocks` holds
shared layers. These import torch, so inference and training code imports them lazily —
except :mod:`avsync.nn.inputs` (input widths and point layouts) and :mod:`avsync.nn.portable`
(a checkpoint reader and the keypoint SyncNet's forward pass in numpy), which are torch-free."""
