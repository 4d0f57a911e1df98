//! Build script: libtorch link settings when the `torch` feature is on.

include!("../build-support/torch_link.rs");

fn main() {
    link_torch();
}
