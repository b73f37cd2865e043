"""The errors the registry raises; each maps to one HTTP status in the API."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""

    #: The HTTP status the JSON API answers with for this error.
    http_status: int = 500


class InvalidVersionError(RegistryError, ValueError):
    """A version string that is not strict SemVer 2.0.0, or could escape the root."""

    http_status = 400


class InvalidMetadataError(RegistryError, ValueError):
    """Metadata, a stage name or a patch the registry refuses (reserved key, bad type, too large)."""

    http_status = 400


class InvalidArgumentError(RegistryError, ValueError):
    """An argument out of range or of the wrong form, such as a history ``limit`` or ``before``."""

    http_status = 400


class AccessDeniedError(RegistryError):
    """The caller's token lacks the role (or the stage) a change needs: nothing was changed."""

    http_status = 403

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        #: The role the refused change needs, such as ``promoter``.
        self.role = role

    def __reduce__(self) -> tuple[type[AccessDeniedError], tuple[str, str]]:
        """Pickled with its own arguments, as :class:`ConfigError`."""
        return type(self), (str(self), self.role)


class VersionAliasError(RegistryError):
    """A write through a version folder that is a link to another version's folder (an alias)."""

    http_status = 409


class VersionNotFoundError(RegistryError, LookupError):
    """No committed version of that name, or nothing that qualifies as latest."""

    http_status = 404


class VersionExistsError(RegistryError):
    """``save_model`` to a version that exists, also when two writers race for it."""

    http_status = 409


class VersionInUseError(RegistryError):
    """A delete refused because the version serves, is a canary or is a stage's rollback target;
    the message (and ``.reasons``) says which. Demote it first."""

    http_status = 409

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        #: Why the version is protected, one line each.
        self.reasons = list(reasons or [])


class CorruptVersionError(RegistryError):
    """``metadata.json`` is not a JSON object, or the artefact fails its sha256 or to load."""

    http_status = 500


class UntrustedArtefactError(CorruptVersionError):
    """An artefact the registry refuses to unpickle: not signed by a trusted key, or a pickle that
    would import outside the allow-list. Nothing was unpickled; the message names the reason."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"version {version}: untrusted artefact, not loaded: {reason}")
        #: The version refused.
        self.version = version
        #: Why, such as ``global os.system is not in the pickle allow-list``.
        self.reason = reason

    def __reduce__(self) -> tuple[type[UntrustedArtefactError], tuple[str, str]]:
        """Pickled with its own arguments (a process pool or a task queue passes it on whole)."""
        return type(self), (self.version, self.reason)


class InvalidKeyError(RegistryError, ValueError):
    """A signing or trusted key that cannot be used: unreadable, not PEM, not an elliptic-curve key
    of a supported curve, or a public key where a private one is needed."""

    http_status = 400


class ConflictError(RegistryError):
    """A conditional write lost a race: the object changed since it was read (retried internally)."""

    http_status = 409


class RollbackIncompleteError(RegistryError):
    """A rollback failed part way and some of its changes could not be undone; the message names
    each version left changed and its stage."""

    http_status = 409


class PreconditionFailedError(RegistryError):
    """A conditional change (``expected=``, HTTP ``If-Match``) found the version changed: nothing done."""

    http_status = 412


class PromotionRefusedError(RegistryError):
    """A stage change (or a publish with a stage) that breaks the target stage's rules: nothing
    changed. ``unmet`` lists every rule it breaks, one sentence each."""

    http_status = 409

    def __init__(self, version: str, stage: str, unmet: list[str]) -> None:
        super().__init__(f"version {version} may not enter stage {stage!r}: " + "; ".join(unmet))
        self.version, self.stage = version, stage
        #: Every unmet rule, one sentence each (``error.unmet`` in the HTTP answer).
        self.unmet = list(unmet)

    def __reduce__(self) -> tuple[type[PromotionRefusedError], tuple[str, str, list[str]]]:
        """Pickled with its own arguments, as :class:`UntrustedArtefactError`."""
        return type(self), (self.version, self.stage, self.unmet)


class StageRuleError(RegistryError, ValueError):
    """A malformed stage rule (``stage_rules=``, ``MODEL_REGISTRY_STAGE_RULES``); the message names it."""


class StorageUnavailableError(RegistryError, OSError):
    """The store did not answer a listing or a read (a timeout, a refused connection, a 503), or
    the registry root is not there (a local folder or a bucket that does not exist)."""

    http_status = 503

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        #: The full path or URL at fault, for the operator (the CLI prints it). Never part of the
        #: message, which the HTTP API shows.
        self.location = location


class RootMissingError(StorageUnavailableError):
    """The registry root is not there: a local folder or a bucket that does not exist (a typo in the
    root must not look like an empty registry)."""

    def __init__(self, message: str, *, location: str | None = None, kind: str = "folder") -> None:
        super().__init__(message, location=location)
        #: What is missing, ``"folder"`` or ``"bucket"``: what an answer that may not name the root
        #: (``/health`` without the token) can still say.
        self.kind = kind


class UnknownModelError(RegistryError, KeyError):
    """No named model of that name in ``MODEL_REGISTRY_MODELS``."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StorageBackendMissingError(RegistryError, ImportError):
    """The fsspec backend of a URL scheme is not installed; the message names the extra."""

    http_status = 500


class CorruptStateError(RegistryError):
    """A document the registry keeps for itself under ``state/`` (a webhook's cursor) that is not
    what the registry wrote: hand-edited or damaged. The message names it and says how to recover."""

    http_status = 500


class ConfigError(RegistryError, ValueError):
    """A ``MODEL_REGISTRY_*`` config value that is not of its key's type; raised by ``init_app``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        #: The config key at fault, such as ``MODEL_REGISTRY_API_ENABLED``.
        self.key = key

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        """Pickled with its own arguments, as :class:`UntrustedArtefactError`."""
        return type(self), (self.key, str(self))
