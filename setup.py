"""Build the C core as a cffi extension (see mlm/egg/_build.py for the per-platform plan)."""

from setuptools import setup

setup(cffi_modules=["mlm/egg/_build.py:make_ffibuilder"])
