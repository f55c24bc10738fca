"""Errors a user can fix. The CLI prints them as one line each and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a recipe, a data path, a schedule or a plugin: never an msframe bug.

    ``str(err)`` reads ``FILE: KEY: MESSAGE`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key

    def located(self, file: str | None) -> UserError:
        """The same error, attributed to ``file`` unless it already names one."""
        if self.file is None:
            self.file = file
        return self

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.key, self.message) if p)


class RecipeErrors(UserError):
    """Several recipe mistakes found in one validation pass, reported together."""

    def __init__(self, errors: list[UserError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    def located(self, file: str | None) -> RecipeErrors:
        for e in self.errors:
            e.located(file)
        return self

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class PluginError(UserError):
    """A plugin failed to import or register, or two plugins claim one component name."""


class Diverged(UserError):
    """Training produced a non-finite or exploding loss (usually too high a learning rate).

    The CLI prints it as one line and exits with code 3; the last checkpoint written before the
    divergence is kept, so the run can be inspected or resumed with other settings.
    """
