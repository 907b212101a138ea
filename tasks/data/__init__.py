"""Readers, numpy features and post-processing for GLUE, SQuAD, RACE and BoolQ; no framework imports.

Every reader raises `DataError` (file and line, line:column or JSON path) for a file it cannot read.
"""
from tasks.data.files import DataError

__all__ = ["DataError"]
