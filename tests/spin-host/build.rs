//! Link settings Cargo.toml cannot express.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // 64 KiB of stack instead of rustc's 1 MiB: this fixture stands in for KV that Spin serves
    // natively, with no memory of its own, and a pooled instance's memory is zeroed for every
    // request (see build_spin in scripts/build), so the fixture's own stack should not weigh on the
    // measured request. Its calls are shallow (a file read or a rename).
    println!("cargo::rustc-link-arg-cdylib=-zstack-size=65536");
}
