"""Anthropic HH-RLHF dialogues as prompt/response pairs.

Dataset from "Training a Helpful and Harmless Assistant with Reinforcement
Learning from Human Feedback" (Bai et al., 2022). Each record holds two whole
dialogues, `"\\n\\nHuman: ...\\n\\nAssistant: ..."`, that should share every turn
but the last Assistant one. The shared part, up to and including the last
`"\\n\\nAssistant:"`, is the prompt; what follows is the response, kept exactly
(it usually starts with a space) so that `prompt + response` is the dialogue.
"""

from __future__ import annotations

from lit_rlhf.data.records import PreferenceRecord
from lit_rlhf.errors import DataError

ASSISTANT_TURN = "\n\nAssistant:"
HH_FIELDS = "required: chosen, rejected"


def split_last_assistant_turn(dialogue: str) -> tuple[str, str]:
    """Cut a dialogue after its last Assistant marker: (prompt ending in the marker, response)."""
    cut = dialogue.rfind(ASSISTANT_TURN)
    if cut < 0:
        raise DataError(f"dialogue has no {ASSISTANT_TURN!r} turn")
    end = cut + len(ASSISTANT_TURN)
    return dialogue[:end], dialogue[end:]


def hh_preference(row: dict) -> PreferenceRecord:
    """One HH-RLHF row -> PreferenceRecord; raises DataError (without location) if the row is invalid."""
    prompts, responses = {}, {}
    for field in ("chosen", "rejected"):
        dialogue = row.get(field)
        if dialogue is None:
            raise DataError(f"record has no field '{field}' ({HH_FIELDS})")
        if not isinstance(dialogue, str):
            raise DataError(f"field '{field}' must be a string, got {type(dialogue).__name__}")
        try:
            prompts[field], responses[field] = split_last_assistant_turn(dialogue)
        except DataError as error:
            raise DataError(f"{field} {error}") from None
    if prompts["chosen"] != prompts["rejected"]:
        raise DataError("chosen and rejected dialogues differ before the last Assistant turn")
    for field, response in responses.items():
        if not response.strip():
            raise DataError(f"{field} response is empty")
    return PreferenceRecord(prompt=prompts["chosen"], chosen=responses["chosen"], rejected=responses["rejected"])
