"""Labeling instructions (Label Studio ``expert_instruction``, HTML) with examples and the hotkeys.

The examples are the round's own gold examples (:mod:`annotation.gold`): one known-clean removal
(good) and one where the object remains (bad), each as the source-with-mask overlay and the result.
They are never tasks of the round, so the instructions do not reveal which tasks are gold.
"""

from __future__ import annotations

from html import escape

from annotation.convert import BAD, GOOD, REASONS

# the hotkeys annotation/configs/review.xml declares (keep in sync: tests/annotation/test_units.py checks)
REVIEW_HOTKEYS = {GOOD: "1", BAD: "2", **{r: str(3 + i) for i, r in enumerate(REASONS)}}
COMMON_KEYS = [("Ctrl+Enter", "submit"), ("Ctrl+Space", "skip (no vote; use it when you cannot judge)")]

_WHAT = {
    "review": ("<p><b>Was the object under the red mask removed cleanly?</b> Compare the <i>Result</i> with the "
               "<i>Source</i>. Answer <b>good</b> only if the object is gone and the filled area looks like a "
               "natural continuation of the background: no trace of the object, no smear, blur, seam or colour "
               "patch, no new object, no shadow or reflection of the removed object left. Otherwise answer "
               "<b>bad</b> and tick every reason that applies.</p>"
               "<p>Judge each image on its own{prefill}. Some tasks have a known answer that measures how "
               "consistent the labels are.</p>"),
    "pairwise": ("<p><b>Which removal is better?</b> Click the result (A or B) in which the object under the "
                 "red mask is removed more cleanly, using the same criteria as the review project: no trace "
                 "of the object, no artifacts, no new object, no shadow or reflection left.</p>"),
}


def _example(answer: str, result_url: str, overlay_url: str) -> str:
    caption = ("good: the object is gone and the fill is clean" if answer == GOOD
               else "bad (object_remains): the object is still there")
    img = 'width="128" height="128"'   # Label Studio drops style attributes from instructions
    return (f'<tr><td><img src="{escape(overlay_url)}" {img} alt="source with mask"/></td>'
            f'<td><img src="{escape(result_url)}" {img} alt="result"/></td><td>{escape(caption)}</td></tr>')


def instructions_html(kind: str, examples: list[tuple[str, str, str]], prefill: bool = False) -> str:
    """The instructions of a ``kind`` ("review" / "pairwise") project; ``examples`` = [(answer,
    result URL, overlay URL)] (empty when the round has no gold); ``prefill``: the model's answer is
    pre-selected (then pressing its hotkey clears it: Label Studio toggles a chosen choice)."""
    note = (": the model's guess is pre-selected; check it, never submit it unseen (pressing the hotkey of the "
            "pre-selected answer clears it)" if prefill else ": no answer is filled in for you")
    parts = [_WHAT[kind].replace("{prefill}", note)]
    if examples:
        parts.append("<p><b>Examples</b> (source with the mask in red, then the result):</p><table>"
                     + "".join(_example(*e) for e in examples) + "</table>")
    keys = ([(REVIEW_HOTKEYS[GOOD], "good"), (REVIEW_HOTKEYS[BAD], "bad")]
            + [(REVIEW_HOTKEYS[r], f"reason {r} (after bad)") for r in REASONS] if kind == "review"
            else [("click", "the better result")])
    rows = "".join(f"<tr><td><kbd>{escape(k)}</kbd></td><td>{escape(v)}</td></tr>" for k, v in keys + COMMON_KEYS)
    parts.append(f"<p><b>Hotkeys</b></p><table>{rows}</table>")
    return "\n".join(parts)
