"""Fakes with the real interfaces, for fast tests of the code above them.

The fakes plugin authors use too (pynvml, amdsmi, the unit manager) ship in vllm_agent.testing;
the rest are here. Import each from its module, e.g. ``from fakes.fake_hub import FakeHub``; this
package imports nothing itself, so one fake never drags in another's dependencies.
"""
