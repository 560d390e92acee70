"""`tiny-llama`: a tiny seeded Llama with an in-process byte-level BPE tokenizer and a ChatML template.

Built in milliseconds with no download, for tests and smoke runs (the nanoGPT
habit of a throwaway tokenizer trained in-process). Same chat format as
SmolLM2, so every code path (templates, masks, generation) is exercised.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (  # noqa: SIM905 - a readable word list
    "the a an and or but to of in on for with how what why when where who which do does did can could would should "
    "i you he she it we they my your our their this that these those is are was were be been have has had not no yes "
    "sorry cannot help with request illegal harmful unsafe instead here steps step first then finally answer sentiment "
    "positive negative review movie product great terrible good bad love hate boring amazing price quality "
    "tom anna has apples buys sells more less gives how many total left each plus minus times number is "
    "make build hack steal weapon bomb drug scam password account money bank card people person kill process python "
    "photo shoot night camera write code program computer file data email message friend family school work"
).split()


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # A fixed corpus (deterministic merges): word list sentences plus digits and punctuation.
    corpus = [" ".join(_WORDS[i:i + 12]) for i in range(0, len(_WORDS), 3)] + ["0 1 2 3 4 5 6 7 8 9 10 . , ? ! : ;"]
    tk.train_from_iterator(corpus * 4, trainer=trainer)
    return tk.to_str()


def tokenizer() -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def load(seed: int = 0) -> tuple[Any, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
