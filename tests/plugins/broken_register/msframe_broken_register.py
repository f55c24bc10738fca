"""A plugin whose hook registers something that is not a component."""

import msframe


@msframe.hookimpl
def register_backbones(register):
    register("not_a_backbone", dict)
