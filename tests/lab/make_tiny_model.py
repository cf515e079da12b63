"""Build a tiny random Llama model that a real vLLM can load (run inside the vllm-cpu image).

A byte-level BPE tokenizer trained offline with `tokenizers` on generated text, a LlamaConfig
with hidden size 256 and 4 heads (head_dim 64: head_dim 16 crashes vLLM's CPU attention at the
first request), random weights saved as safetensors, and a chat template. Deterministic (seeded).

    python make_tiny_model.py OUT_DIR
"""
import json
import os
import random
import sys


def main(out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    rng = random.Random(0)
    words = ["gpu", "model", "serve", "token", "cluster", "ray", "node", "fleet", "weights", "cache",
             "the", "a", "is", "of", "and", "to", "in", "hello", "world", "llm", "fast", "slow"]
    corpus = [" ".join(rng.choice(words) for dummy_word in range(30)) for dummy_line in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = (
        "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "llmfleet-tiny.json"), "w") as f:
        json.dump({"made_by": "tests/lab/make_tiny_model.py", "vocab": len(fast)}, f)
    print("tiny model in %s: %s" % (out, sorted(os.listdir(out))))


if __name__ == "__main__":
    main(sys.argv[1])
