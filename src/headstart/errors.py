"""The exceptions headstart raises on purpose.

Every error a user can cause is a ``HeadstartError``; the CLI catches exactly
this family, prints one line and exits non-zero. Anything else is a bug.

The library raises and the faces render: an error's ``message`` says what is wrong
(the file, the value), and its ``hint`` what would fix it, with each parameter
written as ``{name}``. ``str(error)`` spells parameters as the Python API does
(``strict``); the CLI passes its own words to :meth:`HeadstartError.render`
(``--strict``), so no library message names a command-line flag.

    HeadstartError
    ├── ConfigError        a parameter is out of range or of the wrong kind
    ├── DataError          a dataset, image file, CSV, IDX file or split is unusable
    │   └── ImageDecodeError   one image could not be decoded (carries path and reason)
    ├── WeightsError       weights are missing, corrupt, unsafe or do not fit the model
    ├── BackboneError      an unknown backbone name or an impossible backbone request
    ├── NotFittedError     an estimator was used before ``fit``
    ├── OutputError        a folder to write to cannot be used (unwritable, holds a model,
    │                      in use by another run), or a save failed (saying where it went)
    └── TrainingError      training stopped (non-finite loss, interrupted run)
        └── TrainingInterrupted  SIGINT/SIGTERM arrived; a checkpoint was saved first
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BackboneError",
    "ConfigError",
    "DataError",
    "ExportError",
    "HeadstartError",
    "ImageDecodeError",
    "NotFittedError",
    "OutputError",
    "TrainingError",
    "TrainingInterrupted",
    "WeightsError",
]


# How the Python API spells a hint's switches; every other {name} is spelled as is.
API_WORDS = {
    "resume": "resume=True",
    "overwrite": "overwrite=True",
    "out": "folder",
    "strict": "strict=True",
    "max_pixels": "DecodeOptions.max_pixels",
    "dicom_window": "DecodeOptions.dicom_window",
    "frames": "DecodeOptions.frames",
    "classes": "classes=[...]",
    "model_folder": "a folder written by ImageClassifier.save",
    "unlabelled_images": "fit(train, unlabelled=load_unlabelled(folder))",
    "balanced_class_weights": "TrainConfig(class_weights='balanced')",
    "no_class_weights": "TrainConfig(class_weights='none')",
    "list_backbones": "headstart.list_backbones()",
    "check_data": "headstart.check_data(path)",
    "all_findings": "all in check.json, written by write_report()",
}


# Settings a message may name in its text rather than in its hint: an image skipped
# above the pixel limit says so in its reason, which travels as a string (a load report,
# a check finding) to a face that then words the setting its own way.
_SETTINGS_IN_MESSAGES = ("max_pixels", "dicom_window", "frames")


def respell(text: str, words: Mapping[str, str] | None = None) -> str:
    """``text`` with the API spelling of the settings messages name (``DecodeOptions.
    max_pixels``) replaced by ``words``' spelling (``--max-pixels``), where given."""
    for name in _SETTINGS_IN_MESSAGES:
        if words and name in words:
            text = text.replace(API_WORDS[name], words[name])
    return text


class _Words(dict):
    """Spellings for the ``{name}`` fields of a hint: a face's own, else the API's."""

    def __missing__(self, key: str) -> str:
        return API_WORDS.get(key, key)


def literal(value: object) -> str:
    """``value`` as text to put in a message that names parameters as ``{name}``."""
    return str(value).replace("{", "{{").replace("}", "}}")


def spell(template: str, words: Mapping[str, str] | None = None) -> str:
    """Fill a hint's ``{name}`` fields with ``words``, else the Python API's spelling."""
    return template.format_map(_Words(words or {}))


class HeadstartError(Exception):
    """Base class of every error headstart raises for bad input or state."""

    def __init__(
        self, message: str, *, hint: str | None = None, names_in_message: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint  # what would fix it; parameters written as {name}
        # The message itself names parameters as {name} (values in it escaped with
        # `literal`): "{strategy} semi-supervised needs {unlabelled}" reads
        # "--strategy semi-supervised needs --unlabelled" on the command line.
        self.names_in_message = names_in_message

    def render(self, words: Mapping[str, str] | None = None) -> str:
        """The message and its hint, each ``{name}`` spelled by ``words`` (a face's own
        words for the parameters, e.g. the CLI's flags), else as the Python API names it."""
        if self.names_in_message:
            message = spell(self.message, words)
        else:
            message = respell(self.message, words)
        if not self.hint:
            return message
        separator = "\n" if "\n" in message else " "  # a list of files: hint below it
        return f"{message}{separator}{spell(self.hint, words)}"

    def __str__(self) -> str:
        return self.render()


class ConfigError(HeadstartError, ValueError):
    """A configuration value is invalid.

    Built by ``invalid(...)``, it also carries which parameter (``parameter``), what it
    must be (``requirement``) and what it got (``value``), so a face can name the
    parameter its own way: "--head-lr must be > 0" rather than "The 'head_lr'
    parameter of TrainConfig".
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        parameter: str | None = None,
        requirement: str | None = None,
        value: Any = None,
        names_in_message: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, names_in_message=names_in_message)
        self.parameter = parameter
        self.requirement = requirement
        self.value = value

    def render(self, words: Mapping[str, str] | None = None) -> str:
        if self.parameter is None or not words or self.parameter not in words:
            return super().render(words)
        text = f"{words[self.parameter]} must be {self.requirement}. Got {self.value!r} instead."
        return text if not self.hint else f"{text} {spell(self.hint, words)}"


class DataError(HeadstartError):
    """A dataset or data file is unusable."""


class ImageDecodeError(DataError):
    """One image could not be decoded into an RGB picture."""

    def __init__(self, source: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{source}: {reason}", hint=hint)
        self.source = source
        self.reason = reason


class WeightsError(HeadstartError):
    """Weights could not be loaded safely or do not fit the model."""


class BackboneError(HeadstartError):
    """A backbone cannot be built as asked."""


class NotFittedError(HeadstartError, AttributeError):
    """An estimator method that needs a fitted model was called before ``fit``."""


class OutputError(HeadstartError):
    """A folder or file to be written cannot be: checked before the work it would hold."""


class ExportError(HeadstartError):
    """A model could not be exported, or its export failed a check (parity, accuracy)."""


class TrainingError(HeadstartError):
    """Training could not continue (for example a non-finite loss)."""


class TrainingInterrupted(TrainingError):  # noqa: N818 - it is an error for the CLI
    """SIGINT or SIGTERM arrived; a checkpoint was saved first."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int) -> None:
        where = f"; resume from {checkpoint}" if checkpoint else ""
        hint = "Run again with {resume} to continue from it." if checkpoint else None
        super().__init__(f"Interrupted at epoch {epoch + 1}, step {step}{where}.", hint=hint)
        self.checkpoint = checkpoint
