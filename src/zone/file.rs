//! RFC 1035 master-file loading with line-numbered errors.
