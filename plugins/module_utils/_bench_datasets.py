# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: prompt sets for the serving benchmark.

Not a public API; it may change without notice.

Every builder is seeded and returns the same list for the same inputs. Token counts
come from ``count_tokens(text) -> int`` when given (the module passes one that calls
the server's ``/tokenize``), else from an estimate (one token per common English
word, four characters per token for free text).

* ``random``: input/output lengths drawn uniformly from
  ``[len * (1 - range_ratio), len * (1 + range_ratio)]`` like vLLM's RandomDataset;
  the text is random common words, calibrated against ``count_tokens``.
* ``sharegpt``: the ShareGPT_V3 JSON list (``conversations: [{from, value}, ...]``),
  sampled like vLLM's ShareGPTDataset: conversations with at least two turns,
  shuffled with the seed, first turn as prompt, second turn's length as output
  length unless ``output_len`` is fixed, pruned when prompt or output < 4 tokens,
  prompt > 1024 or prompt + output > 2048 (only when the output length is not fixed).
* ``jsonl``: one JSON object per line with ``prompt`` (or ``text``), optional
  ``output_len`` / ``max_tokens``.
* ``prefix``: ``num_prefixes`` shared prefixes of ``prefix_len`` tokens, each
  followed by a unique ``suffix_len`` suffix (like vLLM's prefix_repetition).
"""

from __future__ import annotations

import json
import random

# Short common English words: each is a single token (with its leading space) in the
# BPE tokenizers of the usual model families, which keeps the estimate honest when no
# /tokenize endpoint is available.
WORDS = (
    "the of and to in is for on that with as was at by it be this are from or an "
    "have not but had his they you were her which all she there one can their has "
    "more will would been if who when so what up out no about into than them some "
    "time could only other new then its also two may any these first like over such "
    "our after most made many before must through back years where much your way "
    "well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since "
    "against go came right used take three place house part"
).split()


class Sample(object):
    """One prompt: ``prompt`` text, ``prompt_len`` tokens, ``output_len`` max tokens."""

    __slots__ = ("prompt", "prompt_len", "output_len")

    def __init__(self, prompt, prompt_len, output_len):
        self.prompt = prompt
        self.prompt_len = int(prompt_len)
        self.output_len = int(output_len)

    def as_dict(self):
        return {"prompt": self.prompt, "prompt_len": self.prompt_len,
                "output_len": self.output_len}

    def __repr__(self):
        return "Sample(prompt_len=%d, output_len=%d)" % (self.prompt_len, self.output_len)


def estimate_tokens(text):
    """Rough count when the server cannot tokenize: ~4 characters per token."""
    return max(1, (len(text) + 3) // 4)


def _lengths(rng, mean_len, range_ratio, n):
    if not 0 <= range_ratio < 1:
        raise ValueError("range_ratio must be in [0, 1), got %r" % (range_ratio,))
    lo = max(1, int(mean_len * (1 - range_ratio)))
    hi = max(lo, int(mean_len * (1 + range_ratio)))
    return [rng.randint(lo, hi) for dummy in range(n)]


def _words(rng, n):
    return " ".join(rng.choice(WORDS) for dummy in range(max(0, n)))


def calibrate_ratio(count_tokens, rng, probe_words=512):
    """Tokens per word of the word list as the server counts them."""
    if count_tokens is None:
        return 1.0
    text = _words(rng, probe_words)
    n = count_tokens(text)
    return max(0.05, float(n) / probe_words) if n else 1.0


def _fit_text(rng, target, count_tokens, ratio, prefix=""):
    """Random words whose token count (prefix included) is ``target`` or as near as found."""
    prefix_tokens = len(prefix.split()) * ratio
    need = max(1, int(round((target - prefix_tokens) / ratio)))
    words = [rng.choice(WORDS) for dummy in range(need)]
    if count_tokens is None:
        text = (prefix + " ".join(words)).strip()
        return text, target
    best = None
    for dummy in range(6):
        text = (prefix + " ".join(words)).strip()
        n = count_tokens(text)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (text, n)
        if n == target:
            break
        delta = target - n
        step = int(round(delta / ratio)) or (1 if delta > 0 else -1)
        if step > 0:
            words.extend(rng.choice(WORDS) for dummy in range(step))
        else:
            del words[max(1, len(words) + step):]
    if best[1] != target:
        # Off by a token or two (word merges): swap or add one word until it fits.
        body = best[0][len(prefix):] if prefix and best[0].startswith(prefix) else best[0]
        ws = body.split() or [rng.choice(WORDS)]
        for w in rng.sample(WORDS, min(len(WORDS), 24)):
            cand = ws[:-1] + [w] if best[1] > target else ws + [w]
            text = (prefix + " ".join(cand)).strip()
            n = count_tokens(text)
            if abs(n - target) < abs(best[1] - target):
                best = (text, n)
                ws = cand
            if n == target:
                break
    return best


def random_dataset(num_prompts, input_len, output_len, range_ratio=0.0, seed=0,
                   count_tokens=None):
    rng = random.Random(seed)
    in_lens = _lengths(rng, input_len, range_ratio, num_prompts)
    out_lens = _lengths(rng, output_len, range_ratio, num_prompts)
    ratio = calibrate_ratio(count_tokens, rng)
    out = []
    for i in range(num_prompts):
        text, n = _fit_text(rng, in_lens[i], count_tokens, ratio)
        out.append(Sample(text, n, out_lens[i]))
    return out


def prefix_dataset(num_prompts, prefix_len, suffix_len, output_len, num_prefixes=1, seed=0,
                   count_tokens=None):
    if num_prefixes < 1:
        raise ValueError("num_prefixes must be at least 1")
    rng = random.Random(seed)
    ratio = calibrate_ratio(count_tokens, rng)
    prefixes = [_fit_text(rng, prefix_len, count_tokens, ratio)[0] + " "
                for dummy in range(num_prefixes)]
    out = []
    for i in range(num_prompts):
        prefix = prefixes[i % num_prefixes]
        text, n = _fit_text(rng, prefix_len + suffix_len, count_tokens, ratio, prefix=prefix)
        out.append(Sample(text, n, output_len))
    rng.shuffle(out)
    return out


def load_sharegpt(path, num_prompts, seed=0, output_len=None, count_tokens=None,
                  min_len=4, max_prompt_len=1024, max_total_len=2048):
    with open(path, "rb") as f:
        data = json.loads(f.read().decode("utf-8"))
    if not isinstance(data, list):
        raise ValueError("%s: a ShareGPT file is a JSON list of conversations" % path)
    convs = [d for d in data
             if isinstance(d, dict) and isinstance(d.get("conversations"), list)
             and len(d["conversations"]) >= 2]
    rng = random.Random(seed)
    rng.shuffle(convs)
    count = count_tokens or estimate_tokens
    out = []
    for d in convs:
        if len(out) >= num_prompts:
            break
        prompt = d["conversations"][0].get("value") or ""
        completion = d["conversations"][1].get("value") or ""
        p_len = count(prompt)
        o_len = int(output_len) if output_len else count(completion)
        if p_len < min_len:
            continue
        if not output_len:
            if o_len < min_len or p_len > max_prompt_len or p_len + o_len > max_total_len:
                continue
        out.append(Sample(prompt, p_len, o_len))
    if len(out) < num_prompts:
        raise ValueError("%s: only %d usable conversations for %d prompts"
                         % (path, len(out), num_prompts))
    return out


def load_jsonl(path, num_prompts, seed=0, output_len=None, count_tokens=None, shuffle=False):
    count = count_tokens or estimate_tokens
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode("utf-8").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ValueError("%s line %d: not JSON: %s" % (path, lineno, e))
            if isinstance(obj, str):
                obj = {"prompt": obj}
            prompt = obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else None
            if not isinstance(prompt, str):
                raise ValueError("%s line %d: needs a string 'prompt'" % (path, lineno))
            o_len = output_len or obj.get("output_len") or obj.get("max_tokens") or 256
            rows.append((prompt, int(o_len)))
    if not rows:
        raise ValueError("%s: no prompts" % path)
    if shuffle:
        random.Random(seed).shuffle(rows)
    out = []
    for i in range(num_prompts):
        prompt, o_len = rows[i % len(rows)]
        out.append(Sample(prompt, count(prompt), o_len))
    return out


def build_dataset(name, num_prompts, options, seed=0, count_tokens=None):
    """Dispatch on the dataset ``name`` with the module's ``dataset_options`` dict."""
    o = dict(options or {})
    if name == "random":
        return random_dataset(num_prompts, int(o.get("input_len", 1024)),
                              int(o.get("output_len", 128)),
                              float(o.get("range_ratio", 0.0)), seed, count_tokens)
    if name == "prefix":
        return prefix_dataset(num_prompts, int(o.get("prefix_len", 256)),
                              int(o.get("suffix_len", 256)), int(o.get("output_len", 128)),
                              int(o.get("num_prefixes", 10)), seed, count_tokens)
    if name in ("sharegpt", "jsonl"):
        path = o.get("path")
        if not path:
            raise ValueError("dataset %s needs dataset_options.path" % name)
        out_len = o.get("output_len")
        if name == "sharegpt":
            return load_sharegpt(path, num_prompts, seed, out_len, count_tokens)
        return load_jsonl(path, num_prompts, seed, out_len, count_tokens,
                          bool(o.get("shuffle", False)))
    raise ValueError("unknown dataset %r" % (name,))
