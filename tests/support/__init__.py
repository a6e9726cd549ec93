"""What tests of every tier share: helpers and data no test module defines for another.

A test module imports from here (or from its own folder's conftest fixtures), never from another
test module or from another tier's folder.
"""
