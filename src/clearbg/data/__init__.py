"""Data stage: (photo, mask) pairs in, a clean, resized, clustered training set out.

``pairs`` finds pairs, ``clean`` says which to drop and why, ``prepare`` resizes and writes
them with a manifest, ``cluster`` groups them into product types, ``balance`` samples
clusters in chosen shares, ``augment`` and ``dataset`` feed training.
"""
