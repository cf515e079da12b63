"""The simulator's toy tokenizer: deterministic, reversible, no vocabulary file.

Rules (documented in docs/engine-simulator.md):

* text is encoded as UTF-8 and cut into chunks of 4 bytes; every chunk is one token, so a
  text of ``n`` UTF-8 bytes has ``ceil(n / 4)`` tokens (about one token per English word,
  close to real BPE tokenizers' ~4 characters per token);
* a token's id is the big-endian integer value of its bytes (``"Hell"`` ->
  ``0x48656c6c``); ids are therefore below 2**32, and decoding an id gives its bytes back
  (leading NUL bytes of a chunk are the one thing not preserved);
* decoding joins the bytes of all ids and decodes them as UTF-8 with replacement, so a
  multi-byte character split across two tokens comes back whole;
* chat messages are rendered with :func:`render_chat` before tokenizing;
* generated text is made of 4-byte words with a leading space (``" the"``), one per token,
  so re-tokenizing a completion gives exactly its ``completion_tokens``.
"""

from __future__ import annotations

MAX_ID = 2 ** 32 - 1

# Every word is exactly 4 bytes with its leading space: one generated token each.
WORDS = (
    " the", " and", " for", " you", " was", " are", " not", " but", " can", " one",
    " all", " new", " use", " her", " his", " see", " how", " now", " way", " may",
    " day", " get", " has", " him", " its", " our", " out", " two", " who", " any",
)
_NWORDS = len(WORDS)


def encode(text: str) -> list:
    """Token ids of ``text``."""
    data = text.encode("utf-8")
    fb = int.from_bytes
    return [fb(data[i:i + 4], "big") for i in range(0, len(data), 4)]


def count(text: str) -> int:
    """Number of tokens of ``text`` (same as ``len(encode(text))``, faster)."""
    return (len(text.encode("utf-8")) + 3) // 4


def token_bytes(token_id: int) -> bytes:
    if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0 or token_id > MAX_ID:
        raise ValueError("token id %r is out of vocabulary (0..%d)" % (token_id, MAX_ID))
    return token_id.to_bytes((token_id.bit_length() + 7) // 8, "big")


def decode(ids) -> str:
    """Text of the token ids ``ids`` (raises ValueError on an id outside 0..2**32-1)."""
    return b"".join(token_bytes(t) for t in ids).decode("utf-8", "replace")


def token_strs(ids) -> list:
    return [token_bytes(t).decode("utf-8", "replace") for t in ids]


def message_text(content) -> str:
    """Text of an OpenAI message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    raise ValueError("message content must be a string or a list of content parts")


def render_chat(messages, add_generation_prompt: bool = True) -> str:
    """The simulator's chat template: ``<|role|>\\ncontent\\n`` per message, then
    ``<|assistant|>\\n`` when a generation prompt is wanted."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    out = []
    for msg in messages:
        if not isinstance(msg, dict) or "role" not in msg:
            raise ValueError("each message must be an object with a 'role'")
        out.append("<|%s|>\n%s\n" % (msg["role"], message_text(msg.get("content"))))
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def generated_text(start: int, n: int) -> str:
    """Text of generated tokens ``start`` .. ``start + n - 1`` (deterministic)."""
    return "".join(WORDS[i % _NWORDS] for i in range(start, start + n))
