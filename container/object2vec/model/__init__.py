"""The Object2Vec network: two encoders, a comparator and an MLP."""
