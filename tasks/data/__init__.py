"""Readers, numpy features and post-processing for GLUE, SQuAD, RACE and BoolQ; no framework imports."""
