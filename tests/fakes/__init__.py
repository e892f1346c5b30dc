"""Fakes with the real interfaces, for fast tests of the code above them.

Import each from its module, e.g. ``from fakes.unit_manager import FakeUnitManager``; this
package imports nothing itself, so one fake never drags in another's dependencies.
"""
