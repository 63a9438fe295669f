"""Training objectives as plug-ins: each gives its preprocessors, feature converters and prompt
format (`lm`: next-token prediction; `ul2`: UL2's mixture of denoisers)."""
