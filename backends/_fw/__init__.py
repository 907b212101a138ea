"""Framework adapters: the same small surface in each of torch.py, paddle.py and tensorflow.py.

    set_default_dtype(name)   dtype new parameters and tensors get ("float32" or "float64")
    seed(n), deterministic()  reproducibility
    to_numpy(t), from_numpy(a, dtype=None)
    named_parameters(model)   canonical name -> parameter (the port's own layout)
    assign(param, array), shape(param)
    value_and_grads(model, fn) run fn() -> (loss, outputs, watched) and return loss, outputs,
                              parameter gradients by name and gradients of the watched tensors
    dot(tensor, array)        sum(tensor * array), the scalar parity loss of one output
    no_grad()                 context for forward-only runs
    activation(name)          hidden_act name -> function
"""

# hidden_act values every port implements (transformers' names)
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")
