// The host-side library of this crate is empty: it exists so that
// dataplane/build.rs can depend on it, which makes cargo rebuild the XDP
// object whenever this crate changes. The program itself is src/main.rs.
#![no_std]
