"""Check a model directory the way a real engine's loader does, with its error messages."""

from __future__ import annotations

import glob
import json
import os

from .logs import PY, traceback_text


class ModelDirError(Exception):
    """``str(exc)`` is the whole stderr text (traceback + final line)."""


def _fail(final, engine, where):
    if engine == "sglang":
        frames = [(PY + "/sglang/srt/model_loader/loader.py", 372, where, "")]
    else:
        frames = [(PY + "/vllm/model_executor/model_loader/default_loader.py", 102, where, "")]
    raise ModelDirError(traceback_text(list(frames), final))


def check_model_dir(path, engine="vllm"):
    """Return the parsed config.json of ``path``; raise :class:`ModelDirError`."""
    if not os.path.isdir(path):
        raise ModelDirError(traceback_text(
            [(PY + "/transformers/utils/hub.py", 511, "cached_files", "")],
            "OSError: Incorrect path_or_model_id: '%s'. Please provide either the path to a local folder "
            "or the repo_id of a model on the Hub." % path))
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ModelDirError(traceback_text(
            [(PY + "/transformers/utils/hub.py", 511, "cached_files", "")],
            "OSError: %s does not appear to have a file named config.json. Checkout "
            "'https://huggingface.co/%s/tree/None' for available files." % (path, path.strip("/"))))
    try:
        with open(cfg_path, "rb") as fh:
            config = json.loads(fh.read().decode("utf-8"))
        if not isinstance(config, dict):
            raise ValueError("top level is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelDirError(traceback_text(
            [(PY + "/transformers/configuration_utils.py", 745, "_get_config_dict", "")],
            "OSError: It looks like the config file at '%s' is not a valid JSON file. (%s)" % (cfg_path, exc)))
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, "rb") as fh:
                weight_map = json.loads(fh.read().decode("utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            _fail("json.decoder.JSONDecodeError: %s: invalid safetensors index (%s)" % (index, exc),
                  engine, "_prepare_weights")
        for name in files:
            full = os.path.join(path, name)
            if not os.path.isfile(full):
                _fail("FileNotFoundError: [Errno 2] No such file or directory: '%s'" % full,
                      engine, "_get_weights_iterator")
        if not files:
            _fail("RuntimeError: Cannot find any model weights with `%s`" % path, engine, "_prepare_weights")
    elif not glob.glob(os.path.join(glob.escape(path), "*.safetensors")):
        _fail("RuntimeError: Cannot find any model weights with `%s`" % path, engine, "_prepare_weights")
    return config
