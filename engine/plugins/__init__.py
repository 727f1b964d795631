"""Example plugins: custom layer and model implementations that ship with corral as worked examples.

They are registered like any third-party plugin — listed with ``--plugin``
/ ``CORRAL_PLUGINS`` or declared as entry points — never implicitly.
"""
