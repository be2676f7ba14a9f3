"""Operations pieces: the per-node status API and its client."""
