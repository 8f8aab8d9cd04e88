"""Pure, versioned feature functions shared by the featurizer and the scorer's what-if path.

Both call the very same code, so a model and the features it is fed can never drift apart;
an extractor's ``version`` changes whenever any of its outputs could change.
"""
