"""Chat templates: a chat model's own conversation format, rendered as its files say.

A chat model is trained on conversations laid out in one exact format (Qwen2.5 writes
"<|im_start|>user\\n...<|im_end|>\\n", Llama 3 "<|start_header_id|>user<|end_header_id|>
\\n\\n...<|eot_id|>"), and it answers well only to prompts in that format. The format ships
with the model as a Jinja2 template, the "chat_template" of tokenizer_config.json (or a
chat_template.jinja file beside it), rendered with the variables

    messages               [{"role": "system" | "user" | "assistant", "content": str}, ...]
    add_generation_prompt  True for a prompt: end with the cue that opens the assistant's turn
    bos_token, eos_token, pad_token, unk_token   the tokenizer's special tokens, as text

and the rendered text is then tokenized with the special tokens it spells recognized as
their ids ("<|im_start|>" is one token, not eleven characters).

The rendering follows transformers' `apply_chat_template`, so the text and the ids are the
ones the model was trained on: a sandboxed environment (a template comes from the model's
publisher and is code: the sandbox refuses access to Python internals), `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, and the helpers templates call:
`raise_exception(message)`, a `tojson` that does not escape HTML, `strftime_now(format)`,
and a `{% generation %}` block that renders its body. jinja2 is imported on this path only.
"""

from __future__ import annotations

import json
from datetime import datetime

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class ChatTemplateError(ValueError):
    """A template that does not compile or that refuses a conversation; the message names its origin."""


class ChatTemplate:
    """One Jinja2 chat template; `origin` (the file it came from) prefixes every error."""

    def __init__(self, source: str, special_tokens: dict[str, str], origin: str):
        self.source = source
        self.special_tokens = {k: v for k, v in special_tokens.items() if k in SPECIAL_TOKEN_KEYS and v is not None}
        self.origin = origin
        self._compiled = None

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """The conversation as the model's text (module docstring)."""
        import jinja2

        if self._compiled is None:
            try:
                self._compiled = _environment().from_string(self.source)
            except jinja2.TemplateError as e:
                raise ChatTemplateError(f"{self.origin}: the chat template does not compile ({_line(e)})") from None
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self.special_tokens)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"{self.origin}: the chat template refused the conversation ({_line(e)})") from None


def _line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _environment():
    """The sandboxed environment transformers renders chat templates in."""
    import jinja2
    import jinja2.ext
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        # `{% generation %}...{% endgeneration %}` marks the assistant's tokens for training
        # masks in transformers; rendering keeps the body as it is.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env
