"""Stage 5: binary codes and the portable artifacts that hold them."""

from hashgnn.codes.packing import hamming_distance_reference, pack_codes, sign, unpack_codes

__all__ = ["hamming_distance_reference", "pack_codes", "sign", "unpack_codes"]
