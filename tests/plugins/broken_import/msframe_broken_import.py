"""A plugin whose import fails (a missing dependency)."""

import a_module_that_does_not_exist  # noqa: F401
