"""Stage rules: what a version must satisfy to enter a stage, checked inside the registry so the
Python API, the CLI, the HTTP API and the console obey them alike.

``{"prod": {"from": ["staging"], "signed": true, "approvals": 1, "require": {"metrics.auc": ">= 0.8"}}}``:
per target stage, the stages a version may come from (``null`` in the list: no stage), a signature
that verifies against a trusted key, that many approvals for the stage by distinct actors other than
the promoter and the publisher (:mod:`.approvals`), and conditions on metadata values by dotted path.
Publishing with a stage is a promotion from no stage. A refused promotion raises
:class:`PromotionRefusedError` listing every unmet rule, before anything is written.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from . import approvals
from . import metadata as md
from .errors import InvalidMetadataError, PromotionRefusedError, StageRuleError
from .signing import fingerprint

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from .registry import ModelRegistry

#: The comparisons a ``require`` condition may make.
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
#: The keys a stage's rule may hold.
RULE_KEYS = ("from", "signed", "approvals", "require")
_CONDITION = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([^\s<>=!].*?)\s*", re.DOTALL)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Promotion(NamedTuple):
    """A change that may enter a stage: ``version``'s metadata from ``before`` (None when it is
    being published) to ``after``, made by ``actor`` in ``registry``."""

    registry: ModelRegistry
    version: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    actor: str
    #: The key a publish signs with (None: unsigned); its signature is made in the same publish.
    signing_key: ec.EllipticCurvePrivateKey | None = None

    def signature_status(self) -> str:
        """The version's signature status: now, or, when publishing, as the publish will leave it."""
        if self.before is not None:
            return str(self.registry.signature(self.version)["status"])
        if self.signing_key is None:
            return "unsigned"
        trusted = {key.fingerprint for key in self.registry.signatures.trusted}
        return "verified" if fingerprint(self.signing_key.public_key()) in trusted else "untrusted"


@dataclass(frozen=True)
class Condition:
    """One ``require`` entry: the value at ``path`` compared with ``operand`` by ``op``."""

    path: str
    op: str
    operand: float | int | str

    @classmethod
    def parse(cls, path: Any, text: Any, where: str) -> Condition:
        """``"metrics.auc": ">= 0.8"``: the operand is a JSON number when it parses as one, else text."""
        if not isinstance(path, str) or not all(path.split(".")):
            raise StageRuleError(f"{where}: {path!r} is not a dotted path of metadata keys (metrics.auc)")
        found = _CONDITION.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            ops = " ".join(OPERATORS)
            raise StageRuleError(f"{where}[{path!r}]: {text!r} must be '<op> <operand>' with op one of {ops}")
        op, rest = found.groups()
        try:
            number = md.loads(rest.encode())
        except ValueError:
            number = None
        return cls(path, op, number if _is_number(number) else rest)

    def unmet(self, metadata: Mapping[str, Any]) -> str | None:
        """Why ``metadata`` fails this condition, or None when it holds."""
        value: Any = metadata
        for key in self.path.split("."):
            if not isinstance(value, Mapping) or key not in value:
                return f"require: {self.path} {self.op} {self.operand!r}, but {self.path} is missing"
            value = value[key]
        comparable = _is_number(value) if _is_number(self.operand) else isinstance(value, str)
        if not comparable:
            kind = "a number" if _is_number(self.operand) else "a string"
            return (
                f"require: {self.path} {self.op} {self.operand!r}, but {self.path} is not {kind}: {value!r}"
            )
        if not OPERATORS[self.op](value, self.operand):
            return f"require: {self.path} {self.op} {self.operand!r}, but {self.path} is {value!r}"
        return None


@dataclass(frozen=True)
class StageRule:
    """What a version must satisfy to enter ``stage``."""

    stage: str
    sources: frozenset[str | None] | None = None
    signed: bool = False
    approvals: int = 0
    require: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, stage: Any, rule: Any, allowed_stages: Collection[str] | None) -> StageRule:
        """One stage's rule, checked: :class:`StageRuleError` naming what is malformed."""
        where = f"stage rule {stage!r}"
        try:
            md.check_stage(stage, allowed_stages)
        except InvalidMetadataError as exc:
            raise StageRuleError(f"{where}: {exc}") from None
        if not isinstance(rule, Mapping):
            raise StageRuleError(f"{where} must be an object with any of {', '.join(RULE_KEYS)}")
        unknown = sorted(map(repr, set(rule) - set(RULE_KEYS)))
        if unknown:
            raise StageRuleError(f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(RULE_KEYS)})")
        sources = rule.get("from")
        if sources is not None:
            if isinstance(sources, str) or not isinstance(sources, (list, tuple)):
                raise StageRuleError(f"{where}: 'from' must be a list of stage names (null: no stage)")
            for source in sources:
                if source is not None:
                    try:
                        md.check_stage(source, allowed_stages)
                    except InvalidMetadataError as exc:
                        raise StageRuleError(f"{where}: 'from': {exc}") from None
            sources = frozenset(sources)
        signed = rule.get("signed", False)
        if not isinstance(signed, bool):
            raise StageRuleError(f"{where}: 'signed' must be true or false")
        count = rule.get("approvals", 0)
        if type(count) is not int or count < 0:
            raise StageRuleError(f"{where}: 'approvals' must be a whole number, 0 or more")
        require = rule.get("require", {})
        if not isinstance(require, Mapping):
            raise StageRuleError(f"{where}: 'require' must map dotted paths to '<op> <operand>' conditions")
        conditions = tuple(
            Condition.parse(path, text, f"{where}: 'require'") for path, text in require.items()
        )
        return cls(stage, sources, signed, count, conditions)

    def unmet(self, promotion: Promotion) -> list[str]:
        """Every rule ``promotion`` breaks, a sentence each; empty when it may go ahead."""
        registry, version, before, after, actor, _ = promotion
        found = []
        source = before.get("stage") if before is not None else None
        if self.sources is not None and source not in self.sources:
            allowed = ", ".join(sorted(s if s is not None else "no stage" for s in self.sources)) or "nowhere"
            shown = repr(source) if source is not None else "no stage"
            found.append(f"from: {self.stage} takes versions from {allowed}; {version} is in {shown}")
        if self.signed:
            status = promotion.signature_status()
            if status != "verified":
                found.append(
                    f"signed: the signature of {version} must verify against a trusted key: {status}"
                )
        if self.approvals:
            got = approvals.counted(registry, version, self.stage, actor) if before is not None else 0
            if got < self.approvals:
                found.append(
                    f"approvals: {self.stage} needs {self.approvals} approval(s) by others than the"
                    f" publisher and the promoter; {version} has {got}"
                )
        found += [why for why in (c.unmet(after) for c in self.require) if why is not None]
        return found


class StageRules:
    """A registry's stage rules, by target stage; checked once when the registry is built."""

    def __init__(
        self, rules: Mapping[str, Any] | None, allowed_stages: Collection[str] | None = None
    ) -> None:
        if rules is not None and not isinstance(rules, Mapping):
            raise StageRuleError("stage rules must map stage names to rules")
        self.rules = {
            stage: StageRule.parse(stage, rule, allowed_stages) for stage, rule in (rules or {}).items()
        }

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(self, promotion: Promotion) -> None:
        """Raise :class:`PromotionRefusedError` if the change enters a stage whose rules it breaks;
        a change that enters no stage (or stays in its own) passes."""
        before, after = promotion.before, promotion.after
        stage = after.get("stage")
        if not isinstance(stage, str) or (before is not None and before.get("stage") == stage):
            return
        rule = self.rules.get(stage)
        unmet = rule.unmet(promotion) if rule is not None else []
        if unmet:
            raise PromotionRefusedError(promotion.version, stage, unmet)
