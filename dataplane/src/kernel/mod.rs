//! XDP loader and kernel maps (being written).
