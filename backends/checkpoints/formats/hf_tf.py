"""transformers TensorFlow directories: config.json + tf_model.h5 in Keras' h5 weights layout.

The layout (tf_keras `save_weights_to_hdf5_group`, read by transformers' `load_tf_weights_from_h5`):
the root attribute `layer_names` lists the model's top-level layers (the main layer, e.g. "bert", and
head layers); group <layer> has the attribute `weight_names` (`<model scope>/<layer>/<path>:0`) and
one dataset per weight at that path. transformers drops the model scope when matching: stored names
here are the weight names without it (`bert/encoder/layer_._3/attention/self/query/kernel:0`), which
the rules produce. A sharded checkpoint (transformers' `tf_shard_checkpoint`: tf_model-0000i-of-0000n.h5 +
tf_model.h5.index.json) stores each weight once under that name, listed in each shard's root `layer_names`;
the index names it with the model scope.
"""
from __future__ import annotations

import re
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from backends.errors import BadInput, WeightsError
from backends.tensorfile import read_exact

from . import Source, TensorRef, is_bfloat16, read_json, sharding, write_at, write_json

TITLE = "transformers TensorFlow"
FRAMEWORK = "tf"
MAX_SHARD_SIZE = "5GB"  # the default of transformers' TFPreTrainedModel.save_pretrained
CONFIG = "config.json"
WEIGHTS = "tf_model.h5"
_HEADER_LIMIT = 64512  # bytes an HDF5 object header can hold; longer attributes are split (as Keras does)


def read(path: Path) -> Source:
    config = read_json(path / CONFIG)
    weights = sharding.weights_file(path, WEIGHTS)
    if weights is None:
        raise WeightsError(f"{path / WEIGHTS}: no such file (nor its sharded index {sharding.index_name(WEIGHTS)})")
    if weights.name == WEIGHTS:
        tensors, close = _open(weights, _keras_weights)
    else:  # the index names weights with the model scope; the shards hold them without it
        tensors, close = sharding.read(weights, partial(_open, walk=_shard_weights), stored_name=_unscoped)
    return Source(path, config, path / CONFIG, tensors, weights, close)


def _open(weights: Path, walk):
    """(stored name -> TensorRef, close) of one h5 file whose weights `walk(handle, weights)` yields as (stored
    name, dataset, where it is listed)."""
    import h5py

    if not weights.is_file():
        raise WeightsError(f"{weights}: no such file")
    try:
        handle = h5py.File(weights, "r")
    except OSError as exc:
        raise WeightsError(f"{weights}: not a readable h5 file ({str(exc).splitlines()[0]})") from None
    raw = open(weights, "rb", buffering=0)

    def close():
        handle.close()
        raw.close()

    try:
        size = weights.stat().st_size
        tensors, datasets = {}, {}
        for name, dataset, where in walk(handle, weights):
            if not isinstance(dataset, h5py.Dataset):
                raise WeightsError(f"{weights}: {dataset.name} is a group, not a weight")
            _check_dataset(dataset, weights, size)
            if name in datasets:  # a tied weight listed in two layers: one dataset (hard links), or, as
                # Keras' save_weights writes a layer holding a shared sublayer, a copy in each layer's group
                if datasets[name] != dataset and not _same_values(datasets[name], dataset, tensors[name],
                                                                  _loader(dataset, raw, weights)):
                    raise WeightsError(f"{weights}: two different weights are named {name} (in {where})")
                continue
            datasets[name] = dataset
            tensors[name] = TensorRef(tuple(dataset.shape), dataset.dtype, _loader(dataset, raw, weights))
    except BaseException as exc:
        close()
        if isinstance(exc, (KeyError, OSError)):  # h5py's errors for a missing or unreadable object
            raise WeightsError(f"{weights}: not a Keras h5 weights file ({exc})") from None
        raise
    return tensors, close


def _keras_weights(handle, weights: Path):
    """(stored name, dataset, layer) of a whole-model file in Keras' layout: layers, each listing its weights."""
    indirect = _indirect_links(handle)
    for layer in _attribute(handle, "layer_names"):
        group = _inside(handle, layer, weights, indirect)
        for weight in _attribute(group, "weight_names"):
            name = weight.partition("/")[2] or weight  # drop the model scope, as transformers does
            yield name, _inside(group, weight, weights, indirect), layer


def _shard_weights(handle, weights: Path):
    """(stored name, dataset, "/") of a shard as transformers writes it (`save_pretrained(max_shard_size=...)`,
    read by `load_tf_shard`): the root's `layer_names` lists each weight by its name without the model scope,
    the dataset at that path."""
    indirect = _indirect_links(handle)
    for name in _attribute(handle, "layer_names"):
        yield name, _inside(handle, name, weights, indirect), "/"


def _unscoped(key: str) -> str:
    """A weight name of a TF shard index without the model scope, as transformers' `strip_model_name_and_prefix`
    and `load_tf_sharded_weights` drop it ("tf_bert_model/bert/...:0" -> "bert/...:0")."""
    return key if "model." in key or "/" not in key else key.split("/", 1)[1]


def _same_values(first, second, first_ref: TensorRef, load_second) -> bool:
    """Whether two policy-checked datasets hold the same shape, dtype and bytes (a tied weight's copies)."""
    if first.shape != second.shape or first.dtype != second.dtype:
        return False
    return bool(np.array_equal(first_ref.load(), load_second()))


# ---- what we read from an h5 file: its own bytes, nothing else ----
# HDF5 can make a dataset or a path reach outside the file: external storage (raw data in other files),
# external links (an object of another file), virtual datasets (data mapped from other files), and
# filters loaded as plugins from HDF5_PLUGIN_PATH (code run on the data). Keras writes none of them;
# every weight is checked for all of them before any tensor is read. Soft links are refused too (Keras
# writes hard links only), so every name resolves inside the file through hard links alone.
_BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset"}


def _indirect_links(handle) -> set:
    """The paths of every link in the file that is not a hard link (soft, external and user-defined links), from
    one walk of the file by HDF5 (H5Lvisit, through hard links; h5py's own `visititems_links` makes a Python
    object per link)."""
    import h5py

    found = set()
    handle.id.links.visit(lambda name, info: found.add("/" + name.decode(errors="surrogateescape"))
                          if info.type != h5py.h5l.TYPE_HARD else None, info=True)
    return found


def _inside(group, path: str, weights: Path, indirect: set | None = None):
    """The object at `path` below `group`, reached through hard links only (each component checked). With
    `indirect` (`_indirect_links`), a path none of whose prefixes is an indirect link is opened in one lookup:
    three h5py calls per component took 0.3 s of a conversion's metadata walk at funnel-xlarge."""
    import h5py

    parts = [p for p in path.split("/") if p]
    if indirect is not None and parts:
        prefix = group.name.rstrip("/")
        prefixes = [prefix := f"{prefix}/{part}" for part in parts]
        if not indirect.intersection(prefixes):
            try:  # not group.get: it checks that the path exists component by component first
                return group["/".join(parts)]
            except KeyError:  # missing: named below
                pass
    for part in parts:  # slow path, and the one naming what is missing or not a hard link
        link = group.get(part, getlink=True)
        if link is None:
            raise WeightsError(f"{weights}: {group.name.rstrip('/')}/{part} is missing (named by {path})")
        if not isinstance(link, h5py.HardLink):
            kind = "an external link to another file" if isinstance(link, h5py.ExternalLink) else "a soft link"
            raise WeightsError(f"{weights}: {group.name.rstrip('/')}/{part} is {kind}; refusing to follow it "
                               "(a weights file is read from its own bytes only)")
        group = group[part]
    return group


def _check_dataset(dataset, weights: Path, size: int) -> None:
    """Refuse a dataset whose bytes are not plain numbers stored in this file."""
    import h5py

    where = f"{weights}: dataset {dataset.name}"
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise WeightsError(f"{where} is a virtual dataset (its data is mapped from other files); refusing to read it")
    if plist.get_external_count():
        raise WeightsError(f"{where} keeps its data in external file {plist.get_external(0)[0].decode(errors='replace')!r}"
                           "; refusing to read it (a weights file is read from its own bytes only)")
    for index in range(plist.get_nfilters()):
        code, _, _, label = plist.get_filter(index)
        if code not in _BUILTIN_FILTERS:
            raise WeightsError(f"{where} uses filter {code} ({label.decode(errors='replace')}), not one built into "
                               f"HDF5 ({', '.join(_BUILTIN_FILTERS.values())}); refusing to load a filter plugin")
    if dataset.dtype.kind not in "biuf" or dataset.dtype.subdtype is not None or dataset.dtype.names:
        raise WeightsError(f"{where} holds {dataset.dtype}, not numbers")
    if dataset.shape is None:
        raise WeightsError(f"{where} has no shape (an empty dataspace)")
    offset = dataset.id.get_offset()
    if offset is not None and offset + dataset.size * dataset.dtype.itemsize > size:
        raise WeightsError(f"{where} ends at byte {offset + dataset.size * dataset.dtype.itemsize}, "
                           f"the file has {size} (truncated)")


def _loader(dataset, raw, path: Path):
    """Load a dataset: a contiguous one by a positioned read of its bytes (h5py holds the GIL while it
    reads, which stalls the converter's writer thread), a chunked or compact one through h5py."""
    offset = dataset.id.get_offset()
    if offset is None or dataset.chunks is not None:
        return partial(_read_h5py, dataset, path)
    return partial(read_exact, raw, offset, tuple(dataset.shape), dataset.dtype, path)


def _read_h5py(dataset, path: Path) -> np.ndarray:
    try:
        return dataset[()]
    except OSError as exc:  # a corrupt chunk
        raise WeightsError(f"{path}: dataset {dataset.name} is unreadable ({str(exc).splitlines()[0]})") from None


def write(path: Path, config: dict, specs, produce, rules, max_bytes: int | None = None) -> int:
    """config.json + tf_model.h5 in Keras' layout, or shards of at most `max_bytes` in transformers' shard layout
    (tf_model-00001-of-00002.h5 ...) and their index; the number of weights files."""
    if any(is_bfloat16(dtype) for _, dtype, _ in specs):
        raise BadInput(f"{WEIGHTS} cannot hold bfloat16 (h5py has no such type): use --dtype float16 or float32")
    write_json(path / CONFIG, config)
    scope = _snake_case("TF" + config["architectures"][0])
    if len(sharding.plan(specs, max_bytes)) == 1:
        _write_keras(path / WEIGHTS, specs, produce, rules, scope)
        return 1
    return sharding.write(path, WEIGHTS, specs, max_bytes, partial(write_shard, produce=produce),
                          index_key=lambda name: f"{scope}/{name}")


def _write_keras(file: Path, specs, produce, rules, scope: str) -> None:
    """A whole model in Keras' `save_weights` layout (what `load_tf_weights_from_h5` reads)."""
    import h5py

    layers = {}
    for name, dtype, shape in specs:
        layers.setdefault(name.split("/", 1)[0], []).append(name)
    shared = {layer: [name for name, _, _ in specs if re.fullmatch(pattern, name)]
              for layer, pattern in rules.shared.items() if layer in layers}
    with h5py.File(file, "w") as out:
        _set_attribute(out, "layer_names", [layer.encode() for layer in layers])
        out.attrs["backend"] = b"tensorflow"
        out.attrs["keras_version"] = _keras_version().encode()
        for layer in sorted(layers):
            names = layers[layer] + shared.get(layer, [])
            _set_attribute(out.create_group(layer), "weight_names", [f"{scope}/{name}".encode() for name in names])
        offsets = [_allocate(out[name.split("/", 1)[0]], f"{scope}/{name}", shape, dtype) for name, dtype, shape in specs]
        for layer, names in shared.items():  # hard links: listed twice, stored once
            for name in names:
                out[layer][f"{scope}/{name}"] = out[name.split("/", 1)[0]][f"{scope}/{name}"]
        _set_attribute(out.create_group("top_level_model_weights"), "weight_names", [])
    _write_bytes(file, specs, offsets, produce)


def write_shard(file: Path, specs, produce) -> None:
    """One shard in transformers' TF shard layout: root attribute `layer_names` lists each weight (no model scope,
    so a tied weight, one variable, is stored once), the dataset at that path."""
    import h5py

    with h5py.File(file, "w") as out:
        _set_attribute(out, "layer_names", [name.encode() for name, _, _ in specs])
        offsets = [_allocate(out, name, shape, dtype) for name, dtype, shape in specs]
    _write_bytes(file, specs, offsets, produce)


def _write_bytes(file: Path, specs, offsets, produce) -> None:
    """The tensors' bytes straight to the places HDF5 allocated for them: h5py's writes hold the GIL and took
    twice as long as positioned writes."""
    with open(file, "r+b", buffering=0) as raw:
        for (name, _, _), offset in zip(specs, offsets):
            array = produce(name)
            if array.size:
                write_at(raw, offset, array)


def _allocate(group, name: str, shape, dtype) -> int | None:
    """Create a contiguous dataset with its file space allocated now and never filled; its byte offset
    (None for an empty one)."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return group.create_dataset(name, shape, dtype=dtype, dcpl=dcpl, fill_time="never").id.get_offset()


def _attribute(group, name: str) -> list[str]:
    """A string-list attribute, joined from its chunks `name0`, `name1`... when Keras split it."""
    chunks = [group.attrs[name]] if name in group.attrs else []
    while f"{name}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{name}{len(chunks)}"])
    if not chunks:
        raise KeyError(f"{group.name} has no attribute {name}")
    return [n.decode() if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


def _set_attribute(group, name: str, data: list[bytes]) -> None:
    """Keras' `save_attributes_to_hdf5_group`: split a long list into chunks under the header limit."""
    array, count = np.asarray(data), 1
    while any(chunk.nbytes > _HEADER_LIMIT for chunk in np.array_split(array, count)):
        count += 1
    if count == 1:
        group.attrs[name] = data
    else:
        for index, chunk in enumerate(np.array_split(array, count)):
            group.attrs[f"{name}{index}"] = chunk


def _snake_case(name: str) -> str:
    """Keras' layer-name rule: "TFBertModel" -> "tf_bert_model"."""
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()


def _keras_version() -> str:
    try:
        return metadata.version("tf-keras")
    except metadata.PackageNotFoundError:
        return "2"
