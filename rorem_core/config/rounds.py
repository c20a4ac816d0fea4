"""The typed ``rounds:`` section of params.yaml: one entry per round, keyed by round number.

Each entry names the round's inputs (the paths DVC interpolates into the per-round stages); the
default values of round N come from the round contract (``rorem_core.contract.round_entry``), so an
error can quote the value to add.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from rorem_core.config.base import ConfigError, Strict


class RoundSpec(Strict):
    """Inputs of round N (paths relative to the project root)."""

    init: str = Field(min_length=1)          # the UNet the round fine-tunes: models/base or round N-1's remover
    train: str = Field(min_length=1)         # its training set: data/seed or data/trainset/round-(N-1)
    pool: str = Field(min_length=1)          # new inputs to generate on: data/pools/round-N
    prev_disc: str = Field(min_length=1)     # discriminator that selects for humans (round 0: a marker)
    prev_labels: str = Field(min_length=1)   # human labels so far (round 0: empty)


def parse_rounds(raw: Any, source: str = "params.yaml") -> dict[int, RoundSpec]:
    """``rounds:`` -> {N: RoundSpec}; one error naming the round, the key and the fix."""
    from rorem_core.contract import round_entry

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: rounds must be a mapping keyed by round number (\"1\": {{init, train, "
                          f"pool, prev_disc, prev_labels}}), found {type(raw).__name__}")
    out: dict[int, RoundSpec] = {}
    for key, entry in raw.items():
        try:
            n = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: rounds.{key}: round keys are numbers (\"1\", \"2\", ...); "
                              f"rename {key!r}") from None
        if n < 1:
            raise ConfigError(f"{source}: rounds.{key}: rounds start at 1 (round 0 is the bootstrap)")
        try:
            out[n] = RoundSpec(**(entry or {}))
        except ValidationError as e:
            raise ConfigError(_round_error(source, n, e, round_entry(n))) from None
    if out and sorted(out) != list(range(1, max(out) + 1)):
        raise ConfigError(f"{source}: rounds {sorted(out)} have a gap; rounds run 1, 2, ... without gaps "
                          "(each reads the previous one's outputs)")
    return out


def _round_error(source: str, n: int, e: ValidationError, default: dict[str, str]) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(map(str, err["loc"]))
        if err["type"] == "missing":
            lines.append(f"  rounds.{n}.{key}: missing; add `{key}: {default.get(key, '...')}` "
                         "(the round contract's value)")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  rounds.{n}.{key}: unknown key; a round has {', '.join(RoundSpec.model_fields)}")
        else:
            lines.append(f"  rounds.{n}.{key}: {err['msg']} (got {err['input']!r})")
    return f"{source}: invalid round {n}:\n" + "\n".join(lines)


class DataSpec(Strict):
    """``data:`` of params.yaml: the seed triplets (round 1's training set, the discriminator's anchors)
    and the test split every evaluation reads; ``rorem import seed|test PATH`` points them elsewhere."""

    seed: str = Field("data/seed", min_length=1)
    test: str = Field("data/test", min_length=1)


def parse_data(raw: Any, source: str = "params.yaml") -> DataSpec:
    if raw is None:
        return DataSpec()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: data must be a mapping (seed: ..., test: ...), found {type(raw).__name__}")
    try:
        return DataSpec(**raw)
    except ValidationError as e:
        bad = ", ".join(".".join(map(str, err["loc"])) for err in e.errors())
        raise ConfigError(f"{source}: invalid data section ({bad}); it has keys seed and test (paths)") from None
